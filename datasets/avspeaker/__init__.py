"""Main-speaker detection data: the AVA-ActiveSpeaker layout, turn-taking roles, shards."""
