"""Backbones, heads and the task LightningModules built from them."""
