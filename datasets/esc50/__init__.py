"""ESC-50: meta and annotation readers, crowd aggregation of action vectors, per-fold shards."""
