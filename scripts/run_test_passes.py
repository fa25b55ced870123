"""`make test`: the suite's two pytest passes at once, the main pass on the console, the own-Ray pass (the tests
that start their own Ray instances: `ray job submit` heads, sweeps, interrupts, benchmarks) into a log printed
when it ends. Exit status: the first non-zero of the two (pytest's 5, no tests collected, included).

Why at once: each pass alone leaves about a fifth of the 2 cores idle (process starts, Ray's start-up and
polling, actors waiting on each other): measured with a per-test /proc/stat sampler, the main pass kept the
machine 79 % busy and the own-Ray pass 86 %. The passes share nothing: the main pass's tests use one Ray
instance of their own (tests/conftest.py), every own-Ray test starts and stops its own, each on its own ports and
temp dir, and the project's Ray code never joins a Ray it did not start (trainers/local_ray.py).

Ctrl-C reaches both pytest processes (one process group); SIGTERM (a CI runner's, `timeout`'s) is passed on to
both as SIGINT, so each tears its fixtures and Ray instances down as on Ctrl-C.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

PASSES = {
    "main": ["-m", "not own_ray", "--durations=15"],
    "own-Ray": ["-m", "own_ray", "--durations=5"],
}


def main() -> int:
    started = time.time()
    with tempfile.NamedTemporaryFile("w+", prefix="own-ray-pass-", suffix=".log") as log:
        # SIGINT's default action restored in each child: a runner started in the background (`make test &`, a CI
        # step) ignores SIGINT, its children would inherit that, and the SIGINT passed on below would do nothing
        procs = {name: subprocess.Popen([sys.executable, "-m", "pytest", "-q", *args],
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                                        **({"stdout": log, "stderr": subprocess.STDOUT} if name == "own-Ray" else {}))
                 for name, args in PASSES.items()}
        print(f"own-Ray pass running beside the main pass; its output follows the main pass's ({log.name})",
              flush=True)

        def interrupt(signum, frame):
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)

        signal.signal(signal.SIGTERM, interrupt)
        ended = {}
        while len(ended) < len(procs):
            try:
                time.sleep(1)
            except KeyboardInterrupt:   # Ctrl-C: both children got it too; wait for their teardown
                pass
            for name, p in procs.items():
                if name not in ended and p.poll() is not None:
                    ended[name] = time.time() - started
                    print(f"{name} pass ended (exit {p.returncode}) after {ended[name] / 60:.1f} min", flush=True)
        log.seek(0)
        print(f"\n===== own-Ray pass (ran beside the main pass) =====\n{log.read()}", flush=True)
    for name, p in procs.items():
        print(f"{name} pass: exit {p.returncode} after {ended[name] / 60:.1f} min")
    return next((p.returncode for p in procs.values() if p.returncode != 0), 0)


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    sys.exit(main())
