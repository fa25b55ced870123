"""Batch inference with Ray Data: one actor base for every trained model, and the actor pool that
runs it over a dataset (embeddings, clip and class probabilities, pseudo-labels, evaluation), or, in
local mode, the same model in this process over the dataset's batches."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from trainers.resources import cpus_leaving_one_for_data, gpus_per_actor


def inference_device() -> torch.device:
    """CUDA when Ray gave this actor a GPU and CUDA works here, else CPU: an actor that asked for no GPU
    still sees every GPU of its node (Ray sets CUDA_VISIBLE_DEVICES only for GPU holders), and a node
    may advertise a GPU resource without CUDA (the tests' fake one)."""
    import ray

    holds_gpu = ray.is_initialized() and bool(ray.get_gpu_ids())
    return torch.device("cuda" if holds_gpu and torch.cuda.is_available() else "cpu")


class InferenceActor:
    """Ray Data actor UDF: the model is built once per actor, given its trained weights (`state`;
    None keeps the weights the builder made), moved to `self.device` (`inference_device`) and put in
    eval mode; each batch goes through `predict` under inference mode. Subclasses define
    `predict(batch) -> batch`, taking inputs through `self.floats` and returning outputs `.cpu()`."""

    def __init__(self, build: Callable[[], nn.Module], state: dict | None):
        self.device = inference_device()
        self.model = build()
        if state is not None:
            self.model.load_state_dict(state)
        self.model.to(self.device).eval()

    def floats(self, array) -> torch.Tensor:
        """A numpy batch column as a float32 tensor on the model's device."""
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def __call__(self, batch: dict) -> dict:
        # per call, not once in __init__: grad mode is thread-local and Ray calls UDFs from its own threads
        with torch.inference_mode():
            return self.predict(batch)

    def predict(self, batch: dict) -> dict:
        raise NotImplementedError


def map_with_actors(ds, udf: type, udf_args: tuple, num_blocks: int, concurrency: int, batch_size: int,
                    use_gpu: bool | None = None, cpus: float | None = None):
    """`ds.map_batches` through a pool of `udf` actors. The actors leave a CPU free for the read
    tasks (or a small cluster deadlocks); more actors than read blocks would idle. `cpus`: CPUs per
    actor where other runs hold CPUs meanwhile (a training worker's share of parallel runs, which
    leaves the CPU for the reads too); default: the cluster's but one, shared. `use_gpu` (the
    config's `scale.use_gpu`; None: when the cluster has a GPU): each actor also requests a GPU or an
    even share of one (`gpus_per_actor`) and runs its model there."""
    import ray

    concurrency = max(1, min(concurrency, num_blocks))
    return ds.map_batches(udf, fn_constructor_args=udf_args, batch_size=batch_size, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=concurrency),
                          num_cpus=cpus_leaving_one_for_data(concurrency) if cpus is None else cpus,
                          num_gpus=gpus_per_actor(concurrency, use_gpu))


def infer(ds, udf: type, udf_args: tuple, num_blocks: int, concurrency: int, batch_size: int,
          use_gpu: bool | None = None) -> Iterator[dict]:
    """The output batches of `udf` over a dataset: through `map_with_actors`, or with `concurrency` 0
    (local mode, `resources.inference_actors`) in this process: one model, no actor to start (~4 s an
    evaluation on 2 CPUs: tests/test_inference_local.py), the reads still Ray Data tasks."""
    if concurrency:
        yield from map_with_actors(ds, udf, udf_args, num_blocks, concurrency, batch_size,
                                   use_gpu).iter_batches(batch_size=256, batch_format="numpy")
        return
    model = udf(*udf_args)
    if use_gpu is not False and torch.cuda.is_available():   # this process holds no Ray GPU: the base chose CPU
        model.device = torch.device("cuda")
        model.model.to(model.device)
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield model(batch)


def embed_dataset(ds, udf: type, udf_args: tuple, num_blocks: int, concurrency: int, batch_size: int,
                  use_gpu: bool | None = None) -> dict[str, np.ndarray]:
    """Run a model whose batches come back as {key, embedding} over a dataset (`infer`): {key: embedding}."""
    out = {}
    for batch in infer(ds, udf, udf_args, num_blocks, concurrency, batch_size, use_gpu):
        out.update(zip(batch["key"].tolist(), batch["embedding"]))
    return out
