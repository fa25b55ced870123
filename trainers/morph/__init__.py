"""Voice-guided face morphing (arXiv 2107.07988): guided autoencoder, gating controller, retrieval."""
