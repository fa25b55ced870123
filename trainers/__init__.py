"""Models, heads (losses), the one Ray Train loop, metrics and plots; reads shards only. Shared code
sits at the top (loop, config, resources, inference, verification, heads/, encoders/); each task has
its own subpackage (speaker/, face/, sed/, esc50/, semiweak/), independent of the others."""
