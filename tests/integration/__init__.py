"""Minutes-long integration tests (pytest -m integration): the SLURM cluster run."""
