"""Fixed seeds on CPU: two trainings from scratch on the same shards give the same metrics."""
import shutil

import pytest

from trainers.config import load_config
from workflows.speaker import SpeakerConfig, run

pytestmark = pytest.mark.slow


def test_same_seed_same_metrics(ray_local, tmp_path):
    cfg = load_config(SpeakerConfig, None, ["train.epochs=2", "data.samples_per_shard=16", "demo.n_train_speakers=12",
                                            "demo.n_test_speakers=4", "model.encoder_args={hid_dim: 64}"])
    first = run(cfg, tmp_path, log=print)
    for stale in ("model.pt", "checkpoints"):  # keep corpus and shards, train again from scratch
        path = tmp_path / stale
        path.unlink() if path.is_file() else shutil.rmtree(path)
    second = run(cfg, tmp_path, log=print)
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in second["history"]]
    assert first["verification"] == second["verification"]
