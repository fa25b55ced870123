"""ESC-50 clips + their aggregated action vectors -> one shard set per official fold, through the one
shard writer (Ray Data decodes and resamples in parallel)."""
from __future__ import annotations

import functools
from pathlib import Path

from datasets.audio import encode_wav, load_audio
from datasets.esc50.meta import ESC50Clip


def decode_clip(item: dict, sample_rate: int) -> dict:
    """One shard sample: 16-bit mono wav at `sample_rate`, class index, fold and action vectors."""
    samples, info = load_audio(item["path"], sample_rate)
    return {"wav": encode_wav(samples, sample_rate), "cls": str(item["target"]),
            "json": {"fold": item["fold"], "target": item["target"], "category": item["category"],
                     "av": item["av"], "source": item["filename"], **info}}


def build_esc50_shards(clips: list[ESC50Clip], vectors: dict[str, dict], out_dir: str | Path, *,
                       sample_rate: int, samples_per_shard: int = 128, seed: int = 0,
                       skip_bad: bool = False) -> dict[int, dict]:
    """`out_dir/fold{k}` for each fold present; vectors = {aggregator: {filename: vector}}. Keys are
    the file names without '.wav' (shard keys cannot hold a dot)."""
    from datasets.shards import build_shards

    decode = functools.partial(decode_clip, sample_rate=sample_rate)
    manifests = {}
    for fold in sorted({c.fold for c in clips}):
        items = [{"key": c.filename.rsplit(".", 1)[0], "path": c.path, "filename": c.filename, "fold": c.fold,
                  "target": c.target, "category": c.category,
                  "av": {agg: [float(v) for v in vec[c.filename]] for agg, vec in sorted(vectors.items())}}
                 for c in clips if c.fold == fold]
        manifests[fold] = build_shards(
            items, Path(out_dir) / f"fold{fold}", corpus="esc50", split=f"fold{fold}", decode=decode,
            config={"sample_rate": sample_rate, "format": "wav-pcm16-mono", "aggregators": sorted(vectors)},
            samples_per_shard=samples_per_shard, seed=seed, skip_bad=skip_bad)
    return manifests
