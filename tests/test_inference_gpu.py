"""Inference actors on a GPU cluster, checked without one: the module's Ray advertises one GPU, a resource
with no CUDA behind it on a CPU host, so placement is Ray's real scheduling while the models stay on the CPU."""
import numpy as np
import pytest
import torch
from torch import nn

from trainers.inference import InferenceActor, inference_device, map_with_actors
from trainers.resources import gpus_per_actor

RAY_FAKE_GPUS = 1   # read by conftest's ray_local


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


class WhereAmI(InferenceActor):
    """Each row: the model's output, and the GPU share and device the actor was given."""

    def __init__(self):
        super().__init__(tiny_model, None)

    def predict(self, batch: dict) -> dict:
        import ray

        n = len(batch["x"])
        return {"y": self.model(self.floats(batch["x"])).cpu().numpy(),
                "gpu": np.full(n, ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)),
                "gpu_ids": np.full(n, len(ray.get_gpu_ids())),
                "device": np.array([str(self.device)] * n)}


def run(ray, use_gpu, concurrency=2):
    ds = ray.data.from_items([{"x": np.arange(3, dtype=np.float32) + i} for i in range(8)], override_num_blocks=4)
    rows = list(map_with_actors(ds, WhereAmI, (), num_blocks=4, concurrency=concurrency, batch_size=2,
                                use_gpu=use_gpu).iter_rows())
    assert len(rows) == 8
    with torch.inference_mode():
        expected = tiny_model()(torch.stack([torch.arange(3.0) + i for i in range(8)])).numpy()
    np.testing.assert_allclose(np.stack(sorted((r["y"] for r in rows), key=lambda y: y[0])),
                               expected[np.argsort(expected[:, 0])], rtol=1e-5)
    return rows


def test_gpu_share_per_actor(ray_local):
    assert gpus_per_actor(2, False) == 0.0
    assert gpus_per_actor(1, True) == 1.0
    assert gpus_per_actor(2, True) == 0.5     # two actors share the one GPU
    assert gpus_per_actor(3, None) == 0.3333  # None: the cluster has a GPU; three fit on it
    assert inference_device() == torch.device("cpu")   # the driver holds no GPU


@pytest.mark.parametrize("use_gpu", [True, False])
def test_actors_request_gpus_only_with_use_gpu(ray_local, use_gpu):
    rows = run(ray_local, use_gpu)
    if use_gpu:
        # both actors up at once, each on half the GPU; on a host without CUDA their models ran on the CPU
        assert {float(r["gpu"]) for r in rows} == {0.5} and {int(r["gpu_ids"]) for r in rows} == {1}
        assert {str(r["device"]) for r in rows} == {"cuda" if torch.cuda.is_available() else "cpu"}
    else:   # no GPU asked: the CPU even where the node has CUDA
        assert {float(r["gpu"]) for r in rows} == {0.0} and {int(r["gpu_ids"]) for r in rows} == {0}
        assert {str(r["device"]) for r in rows} == {"cpu"}


class Double:
    def __call__(self, batch: dict) -> dict:
        return {"y": batch["id"] * 2}


@pytest.mark.timeout(240)
def test_actors_beside_another_run_leave_a_cpu_for_the_reads(ray_local):
    """Another run holds half a CPU of the 2 (a training worker of parallel runs: semi-weak's stage-2
    pseudo-labelling runs while the other methods train). Actors given that run's share (`cpus`) leave a whole
    CPU to the read tasks they consume; at the default (the cluster's CPUs but one) only half a CPU would be left
    and no read task could start (the deadlock seen in CI)."""
    ray = ray_local

    @ray.remote(num_cpus=0.5)
    class Training:
        def ready(self) -> bool:
            return True

    holder = Training.remote()
    ray.get(holder.ready.remote())
    ds = ray.data.range(8, override_num_blocks=4)   # 4 read tasks of 1 CPU each
    rows = sorted(r["y"] for r in map_with_actors(ds, Double, (), num_blocks=4, concurrency=1, batch_size=2,
                                                  use_gpu=False, cpus=0.5).iter_rows())
    assert rows == [2 * i for i in range(8)]
    ray.kill(holder)
