"""Task heads: map backbone features to outputs."""
