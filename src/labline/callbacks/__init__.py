"""Lightning callbacks labline adds to every run."""
