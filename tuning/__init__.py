"""Search spaces and the one Tuner (Optuna + ASHA) used by every workflow. A workflow hands the tuner
its `SweepTarget` (tuning/target.py): tuning never imports workflows."""
