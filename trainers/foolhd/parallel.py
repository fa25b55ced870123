"""Per-file attacks as Ray tasks over the test files, resumable, with progress lines.

One task per file (1 CPU, one torch thread) runs every configured attack on it (trainers/foolhd/attacks.py) and
returns the record and the adversarial waves; the driver writes OUT/adversarial/<method>/<key>.wav and, last,
OUT/attacks/<key>.json. That JSON is the file's completion mark: a rerun skips every file whose record carries the
same fingerprint (attack config + model + front end), so an interrupted run resumes where it stopped and a file is
never half-attacked-but-marked. With `fresh_per_file: false` (the official loop: one autoencoder carried over the
files) the tasks form one chain, each starting from the previous one's autoencoder weights (Ray runs them one after
another); a resumed chain starts again from a fresh autoencoder.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from datasets.atomic import write_bytes, write_json
from datasets.audio import encode_wav
from trainers.foolhd.attacks import AttackConfig, attack_file
from trainers.foolhd.frontend import FrontEndConfig

RECORDS, WAVS = "attacks", "adversarial"


def _task(model_state: dict, num_classes: int, front: FrontEndConfig, model_kwargs: dict, item: dict,
          fixed_target, cfg: AttackConfig, index: int, init_states=None):
    import torch

    from trainers.foolhd.xvector import build_xvector

    torch.set_num_threads(1)
    model = build_xvector(num_classes, front, **model_kwargs)
    model.load_state_dict(model_state)
    return attack_file(model, item["wave"], item["label"], fixed_target, cfg, index, init_states)


def _record_path(out: Path, key: str) -> Path:
    return out / RECORDS / f"{key}.json"


def load_record(out: Path, key: str, fingerprint: str) -> dict | None:
    try:
        record = json.loads(_record_path(out, key).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("fingerprint") == fingerprint else None


def _save(out: Path, key: str, index: int, record: dict, fingerprint: str, sample_rate: int) -> dict:
    saved = {"key": key, "index": index, "fingerprint": fingerprint, "label": record["label"],
             "clean_pred": record["clean_pred"]}
    for method, res in record.items():
        if not isinstance(res, dict):
            if res is None:
                saved[method] = None
            continue
        wav = out / WAVS / method / f"{key}.wav"
        write_bytes(wav, encode_wav(res["wave"], sample_rate))
        saved[method] = {k: v for k, v in res.items() if k != "wave"} | {"wav": str(wav.relative_to(out))}
    write_json(_record_path(out, key), saved)   # last: the file's completion mark
    return saved


def run_attacks(model_state: dict, num_classes: int, front: FrontEndConfig, model_kwargs: dict, files: list[dict],
                cfg: AttackConfig, out: Path, fingerprint: str, fixed_target: int | None = None,
                log=print, init_state: dict | None = None) -> list[dict]:
    """Attack `files` ([{"key", "wave", "label"}], index = position) as Ray tasks; returns every file's record."""
    import ray

    records: dict[int, dict] = {}
    todo = []
    for i, item in enumerate(files):
        done = load_record(out, item["key"], fingerprint)
        if done is not None:
            records[i] = done
        else:
            todo.append(i)
    if records:
        log(f"[attack] {len(records)} of {len(files)} files already attacked with this config: skipped (resume)")
    if not todo:
        return [records[i] for i in range(len(files))]
    task = ray.remote(num_cpus=1)(_task)
    model_ref = ray.put(model_state)
    args = (num_classes, front, model_kwargs)
    start = ray.put({m: init_state for m in cfg.modes}) if init_state is not None else None
    pending, index_of, previous = [], {}, start
    for i in todo:
        if cfg.fresh_per_file:
            ref = task.remote(model_ref, *args, files[i], fixed_target, cfg, i, start)
        else:
            ref, previous = task.options(num_returns=2).remote(model_ref, *args, files[i], fixed_target, cfg, i,
                                                               previous)
        pending.append(ref)
        index_of[ref] = i
    log(f"[attack] {len(todo)} files as Ray tasks ({', '.join(cfg.modes + cfg.baselines)}; "
        f"{'a fresh autoencoder per file' if cfg.fresh_per_file else 'one autoencoder carried over the files'})")
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        i = index_of[ready[0]]
        result = ray.get(ready[0])
        record = result[0] if isinstance(result, tuple) else result
        records[i] = _save(out, files[i]["key"], i, record, fingerprint, front.sample_rate)
        done = [records[j] for j in sorted(records)]
        rates = ", ".join(f"{m} {sum(bool(r.get(m) and r[m]['success']) for r in done)}/"
                          f"{sum(r.get(m) is not None for r in done)}" for m in cfg.modes + cfg.baselines)
        log(f"[attack] {len(records)}/{len(files)} files done; success so far: {rates}")
    return [records[i] for i in range(len(files))]


def fingerprint_of(cfg: AttackConfig, model_digest: str, front: FrontEndConfig, fixed_target,
                   init_digest: str | None = None) -> str:
    from trainers.config import config_hash

    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "max_files"}   # more files: same per-file work
    return config_hash({"attack": keep, "model": model_digest, "front": dataclasses.asdict(front),
                        "target": fixed_target, "init": init_digest})


def model_digest(state: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k].cpu().numpy()).tobytes())
    return h.hexdigest()[:16]
