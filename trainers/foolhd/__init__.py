"""FoolHD (arXiv 2011.08483): imperceptible adversarial attacks on x-vector speaker identification."""
