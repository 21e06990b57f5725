"""Measurement: classification metric collections, box and mask overlaps, similarity, model complexity."""
