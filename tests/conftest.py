"""Shared fixtures: one real local Ray instance per test module (started here, not mocked)."""
import os

import pytest

os.environ.setdefault("RAY_ACCEPT_CALLABLE_ON_FUNCTION", "1")
# a stalled Ray Data pipeline fails the test in 10 minutes instead of Ray's default 30
os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "600")


# A fresh local cluster per test module: one cluster for the whole session saw a Ray Train V2
# controller stall before creating its placement group at the ~12th run (not reproduced in
# isolation); per-module clusters bound what a long-lived cluster accumulates, at ~5 s per module.
@pytest.fixture(scope="module")
def ray_local():
    import ray

    if not ray.is_initialized():
        # workers must import helpers defined in test modules (pickled by reference)
        tests, root = (os.path.dirname(os.path.abspath(__file__)),
                       os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([tests, root])}})
    yield ray
    ray.shutdown()
