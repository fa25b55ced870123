"""Weakly-supervised sound event detection (arXiv 2106.06858): task, model, clip and segment metrics."""
