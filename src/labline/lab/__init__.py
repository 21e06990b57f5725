"""The lab stack on 127.0.0.1 (PostgreSQL, MLflow server, SLURM, S3): ``labline lab up|down``, and the cluster tests."""
