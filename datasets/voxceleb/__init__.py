"""VoxCeleb: the corpus layouts and trial lists, and their shards."""
