"""Generators of small demo corpora in the real layouts (VoxCeleb, faces, DCASE, ESC-50, CIFAR-10)."""
