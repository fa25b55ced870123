"""Search spaces and the one Tuner (Optuna + ASHA) used by every workflow."""
