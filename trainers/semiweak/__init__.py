"""Semi-weak labels (arXiv 2103.10608): learning from bags with class counts, and the MIL / LLP baselines."""
