"""Hyperparameter search: labline's Optuna sweeper for Hydra (`labline train -m hparams_search=<name>`).

The Hydra plugin entry point is ``hydra_plugins.labline_optuna_sweeper``; docs/sweeps.md describes usage.
"""
