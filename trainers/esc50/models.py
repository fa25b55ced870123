"""The classifier names of the ESC-50 action-vector workflow. Kept apart from trainers.esc50.folds
(torch, Ray) so that the workflow's `--help` can list them without those imports."""

AV_MODELS = {"av_logreg": "logreg", "av_mlp": "mlp"}
EMBEDDING_MODELS = {"emb_mlp": "mlp", "fusion_emb": "mlp"}     # on audio embeddings (fusion_emb: + vector)
VECTOR_MODELS = {**AV_MODELS, **EMBEDDING_MODELS}             # classifiers of fixed-length vectors
AUDIO_MODELS = ("logmel_cnn", "fusion_early")
MODELS = (*AV_MODELS, *AUDIO_MODELS, "fusion_late", *EMBEDDING_MODELS)
