"""labline's Optuna sweeper, found by Hydra through the ``hydra_plugins`` namespace package."""
