"""Batch inference with Ray Data: one actor base for every trained model, and the actor pool that
runs it over a dataset (embeddings, clip and class probabilities, pseudo-labels, evaluation)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from trainers.resources import cpus_leaving_one_for_data


class InferenceActor:
    """Ray Data actor UDF: the model is built once per actor, given its trained weights (`state`;
    None keeps the weights the builder made) and put in eval mode; each batch goes through
    `predict` under inference mode. Subclasses define `predict(batch) -> batch`."""

    def __init__(self, build: Callable[[], nn.Module], state: dict | None):
        self.model = build()
        if state is not None:
            self.model.load_state_dict(state)
        self.model.eval()

    def __call__(self, batch: dict) -> dict:
        # per call, not once in __init__: grad mode is thread-local and Ray calls UDFs from its own threads
        with torch.inference_mode():
            return self.predict(batch)

    def predict(self, batch: dict) -> dict:
        raise NotImplementedError


def map_with_actors(ds, udf: type, udf_args: tuple, num_blocks: int, concurrency: int, batch_size: int):
    """`ds.map_batches` through a pool of `udf` actors. The actors leave a CPU free for the read
    tasks (or a small cluster deadlocks); more actors than read blocks would idle."""
    import ray

    concurrency = max(1, min(concurrency, num_blocks))
    return ds.map_batches(udf, fn_constructor_args=udf_args, batch_size=batch_size, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=concurrency),
                          num_cpus=cpus_leaving_one_for_data(concurrency))


def embed_dataset(ds, udf: type, udf_args: tuple, num_blocks: int, concurrency: int, batch_size: int
                  ) -> dict[str, np.ndarray]:
    """Run an actor whose batches come back as {key, embedding} over a dataset: {key: embedding}."""
    ds = map_with_actors(ds, udf, udf_args, num_blocks, concurrency, batch_size)
    out = {}
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        out.update(zip(batch["key"].tolist(), batch["embedding"]))
    return out
