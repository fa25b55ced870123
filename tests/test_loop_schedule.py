"""Loop pieces: LR schedules, the LR-step hook, P x K regrouping of a worker's Ray Data stream, and
the lockstep stop across real gloo processes."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.loop import LoopConfig, _in_lockstep, lr_at, validate
from trainers.speaker.task import FrontEnd, SpeakerTask


def test_exponential_schedule_ends_at_final_lr():
    cfg = LoopConfig(epochs=5, lr=1e-2, final_lr=1e-4)
    assert lr_at(cfg, 0) == pytest.approx(1e-2) and lr_at(cfg, 4) == pytest.approx(1e-4)
    assert lr_at(cfg, 2) == pytest.approx(1e-3)


def test_step_schedule_at_milestones():
    cfg = LoopConfig(epochs=10, lr=0.1, lr_milestones=[3, 6], lr_gamma=0.1)
    assert [round(lr_at(cfg, e), 6) for e in range(8)] == [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]
    with pytest.raises(ValueError, match="lr_milestones"):
        validate(LoopConfig(epochs=5, lr_milestones=[5]))


def task(head: dict, pk=None) -> SpeakerTask:
    return SpeakerTask(encoder="tdnn", encoder_args={"hid_dim": 32}, embed_dim=16, head=head, num_classes=10,
                       front=FrontEnd(), batch_size=8, num_frames=20, pk=pk)


def test_lr_step_grows_m_only_without_feature_normalization():
    for fn, grows in (("none", True), ("hfn", False)):
        t = task({"name": "spherefacer", "fn": fn, "m": 1.5, "dm": 0.1})
        model = t.build_model()
        assert t.on_lr_step(model)["head_m"] == pytest.approx(1.6 if grows else 1.5)
        # m is part of the checkpointed state, so a resumed run keeps the grown margin
        fresh = t.build_model()
        fresh.load_state_dict(model.state_dict())
        assert fresh.head.m == pytest.approx(model.head.m)
    assert task({"name": "arcface"}).on_lr_step(task({"name": "arcface"}).build_model()) == {}


def test_pk_regrouping_of_a_shuffled_stream(ray_local):
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 5))
    shard = ray_local.data.from_items([{"label": int(lab), "feats": np.full((30, 80), lab, np.float32)}
                                       for lab in labels]).iterator()
    batches = list(task({"name": "mp", "k": 2}, pk=2).epoch_stream(shard, np.random.default_rng(1)))
    assert len(batches) >= 4
    for b in batches:
        _, counts = np.unique(b["label"], return_counts=True)
        assert len(b["label"]) == 8 and (counts == 2).all()
        assert all(f[0, 0] == lab for f, lab in zip(b["feats"], b["label"]))  # features stay with labels


def _lockstep_worker(rank, n_batches, port, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = len(list(_in_lockstep(iter(range(n_batches[rank])), torch.device("cpu"))))
    finally:
        dist.destroy_process_group()


def test_lockstep_stops_every_worker_at_the_shortest():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_lockstep_worker, args=([5, 3], port, results), nprocs=2)
    assert dict(results) == {0: 3, 1: 3}


def test_plateau_lr_is_replayed_from_the_history():
    """train.monitor: lr x factor once the metric has not improved for more than `patience` epochs
    (torch's ReduceLROnPlateau, mode max), recomputed from the history so a resumed run agrees."""
    cfg = LoopConfig(epochs=20, lr=1e-3, monitor="val_micro_ap", plateau_patience=2, plateau_factor=0.1)
    values = [0.5, 0.6, 0.6, 0.55, 0.59, 0.7, 0.7, 0.7, 0.7]
    history = [{"val_micro_ap": v} for v in values]
    lrs = [lr_at(cfg, e, history) for e in range(len(values) + 1)]
    # no gain after 0.6 at epochs 3, 4, 5 -> cut after the 5th; 0.7 then is new, 3 more flat -> cut again
    assert lrs == pytest.approx([1e-3] * 5 + [1e-4] * 4 + [1e-5])
    with pytest.raises(ValueError, match="excludes"):
        validate(LoopConfig(epochs=5, monitor="val_micro_ap", lr_milestones=[2]))


def test_step_progress_line_by_hand():
    from trainers.loop import _step_line

    # 1000 samples in 10 s: 100/s; 50 of 200 steps in 10 s leaves 150 steps, 30 s
    assert (_step_line(0, 3, 50, 200, 1.2346, 0.5, 1000, 10.0)
            == "[train] epoch 1/3 step 50/200 loss 1.235 acc 0.500 100 samples/s, epoch ETA 0m30s")
    # the first epoch (no step count yet), or a step past the previous epoch's count: no total, no ETA
    assert (_step_line(0, 3, 50, 0, 1.0, 0.25, 500, 10.0)
            == "[train] epoch 1/3 step 50 loss 1.000 acc 0.250 50 samples/s")
    assert _step_line(1, 3, 210, 200, 1.0, 0.25, 500, 10.0).startswith("[train] epoch 2/3 step 210 loss")
