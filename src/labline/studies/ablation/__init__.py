"""Ablation studies: a design of variants expanded into runs (variant x seed x fold), nested under one
MLflow parent, resumable by config hash, and aggregated into a table a paper can use."""
