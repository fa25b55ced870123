"""Face verification task: face shards -> backbone + margin head, LFW 10-fold accuracy."""
