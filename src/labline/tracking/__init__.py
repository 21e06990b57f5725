"""MLflow wiring: the project's store, runs, and what each run records."""
