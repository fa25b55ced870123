"""ESC-50 sound classification with crowdsourced action vectors: vector and audio models, fold runs, fusion."""
