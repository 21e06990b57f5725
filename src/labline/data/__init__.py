"""Datasets, splits, preprocessing and the datamodule that feeds Lightning."""
