"""Local mode's evaluation (`scale.local_mode`): the trained model runs in this process over the dataset's batches
(`trainers.inference.infer` with no actors) and gives what the actor pool gives, and what the model gives when
called directly."""
import os

import numpy as np
import torch
from conftest import SMALL_TDNN

from trainers.config import load_config
from trainers.features import mean_normalize
from trainers.inference import InferenceActor, embed_dataset, infer
from trainers.resources import ScaleConfig, inference_actors
from trainers.speaker.task import EmbedBatch
from workflows.speaker import SpeakerConfig, make_task


class Pid(InferenceActor):
    """Each row: the process that ran the model."""

    def __init__(self):
        super().__init__(lambda: torch.nn.Identity(), None)

    def predict(self, batch: dict) -> dict:
        return {"pid": np.full(len(batch["id"]), os.getpid())}


def test_local_mode_runs_no_inference_actor(ray_local):
    assert inference_actors(ScaleConfig(workers=2)) == 2 and inference_actors(ScaleConfig(local_mode=True)) == 0
    ds = ray_local.data.range(6, override_num_blocks=3)
    local = {int(p) for b in infer(ds, Pid, (), 3, 0, batch_size=2) for p in b["pid"]}
    pooled = {int(p) for b in infer(ds, Pid, (), 3, 1, batch_size=2) for p in b["pid"]}
    assert local == {os.getpid()} and len(pooled) == 1 and pooled != local


def test_speaker_embeddings_in_this_process_equal_the_actors_and_the_model(ray_local):
    task = make_task(load_config(SpeakerConfig, None, [SMALL_TDNN]), num_classes=4)
    torch.manual_seed(0)
    encoder = task.build_encoder().eval()
    state = encoder.state_dict()
    rng = np.random.default_rng(0)
    feats = {f"u{i}": rng.normal(size=(150 + 20 * i, 80)).astype(np.float32) for i in range(5)}   # any length
    ds = lambda: ray_local.data.from_items([{"key": k, "feats": f} for k, f in feats.items()])  # noqa: E731
    local = embed_dataset(ds(), EmbedBatch, (task, state), 1, 0, batch_size=2)
    pooled = embed_dataset(ds(), EmbedBatch, (task, state), 1, 1, batch_size=2)
    with torch.inference_mode():
        direct = {k: encoder(torch.from_numpy(mean_normalize(f))[None])[0].numpy() for k, f in feats.items()}
    assert local.keys() == pooled.keys() == direct.keys()
    for k in direct:
        np.testing.assert_allclose(local[k], direct[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooled[k], direct[k], rtol=1e-5, atol=1e-6)
