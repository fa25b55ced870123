"""Main-speaker detection with an audio-visual transformer (arXiv 2108.03256)."""
