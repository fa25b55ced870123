"""Fixed seeds on CPU: two trainings from scratch on the same shards give the same metrics, with every
speaker augmentation on (speed perturbation, MUSAN noise, RIRs, SpecAugment: the most random path). The
second run reads its batches without the loop's next-epoch prefetch thread (train.prefetch_batches=0): the
prefetch must not change a number. The first run is tracked to TensorBoard (`--tracker tensorboard`), read back
with TensorBoard's event reader."""
import shutil

import pytest
import torch
from conftest import SMALL_TDNN, tracked, write_augment_sources

from trainers.config import load_config
from workflows.speaker import SpeakerConfig, run

pytestmark = pytest.mark.slow


def test_same_seed_same_metrics(ray_local, tmp_path):
    musan, rirs = write_augment_sources(tmp_path / "sources")
    cfg = load_config(SpeakerConfig, None, ["train.epochs=2", "data.samples_per_shard=16", "demo.n_train_speakers=12",
                                            "demo.n_test_speakers=4", SMALL_TDNN,
                                            "augment.speed_perturb=true", f"augment.musan={musan}",
                                            f"augment.rirs={rirs}", "augment.spec_aug=true",
                                            "eval.score_untrained=false"])   # the trained model's scores only
    with tracked("tensorboard", tmp_path):   # writes OUT/tensorboard, the run's OUT
        first = run(cfg, tmp_path, log=print)
    model = torch.load(tmp_path / "model.pt", weights_only=True)["state"]["model"]
    assert model["head.weight"].shape[0] == 3 * 12          # speed-perturbed utterances are new speakers
    for stale in ("model.pt", "checkpoints"):  # keep corpus and shards, train again from scratch
        path = tmp_path / stale
        path.unlink() if path.is_file() else shutil.rmtree(path)
    cfg.train.prefetch_batches = 0
    second = run(cfg, tmp_path, log=print)
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in second["history"]]
    assert first["verification"] == second["verification"]
    assert_tensorboard_holds(tmp_path / "tensorboard", first)


def assert_tensorboard_holds(logdir, report):
    """Every epoch (written from Ray Train's controller), the final metrics, the config and results.md."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs = EventAccumulator(str(logdir / "train")).Reload()
    assert [(e.step, e.value) for e in epochs.Scalars("loss")] == [(h["epoch"], pytest.approx(h["loss"]))
                                                                  for h in report["history"]]
    final = EventAccumulator(str(logdir / "final")).Reload()
    [eer] = final.Scalars("verification.veri_test2.trained.eer")
    assert eer.step == 0 and eer.value == pytest.approx(report["verification"]["veri_test2"]["trained"]["eer"])
    assert {"config/text_summary", "results/text_summary"} <= set(final.Tags()["tensors"]), final.Tags()
