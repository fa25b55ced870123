"""Models, heads (losses), the one Ray Train loop, metrics and plots. Reads shards only."""
