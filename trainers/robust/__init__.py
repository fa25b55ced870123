"""Constant random perturbations for adversarial robustness (arXiv 2103.08265)."""
