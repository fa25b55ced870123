"""One thin script per job: parse config -> build shards -> train -> evaluate -> report. Each declares
its config dataclasses, `validate(cfg)`, `run(cfg, out, *, log, callbacks=None)` and its sweep target
(`SWEEP`); `sweep.py` looks the target up by name, `common.py` holds the CLI flags and report files."""
