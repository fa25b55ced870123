"""The model ablations of the SED workflow: name -> the model settings it overrides. Kept apart from
trainers.sed.folds (torch, Ray) so that the workflow's `--help` can list them without those imports."""

ABLATIONS = {
    "full": {},
    "no_aux": {"aux_decoder": False},
    "two_step_scalar": {"pooling": "two_step_scalar"},
    "time_attention": {"pooling": "time_attention"},
    "average": {"pooling": "average"},
    "max": {"pooling": "max"},
}
