"""VoxCeleb-layout corpora -> train/test shard sets, through the one shard writer."""
from __future__ import annotations

import functools
from pathlib import Path

from datasets.audio import AudioError, encode_wav, load_audio
from datasets.shards import build_shards
from datasets.voxceleb.layout import Utterance, VoxCelebLayout

# One 25 ms analysis frame of the speaker front end (kaldi fbank, WeSpeaker's): audio shorter than that has no
# feature frame, so it is refused here, naming the file, instead of failing inside training.
MIN_DURATION_S = 0.025


def decode_utterance(item: dict, sample_rate: int) -> dict:
    """One shard sample: 16-bit mono wav at `sample_rate`, speaker id, class index, provenance."""
    samples, info = load_audio(item["path"], sample_rate)
    if len(samples) < MIN_DURATION_S * sample_rate:
        raise AudioError(f"{item['path']} is {1000 * len(samples) / sample_rate:.1f} ms long, shorter than one "
                         f"{1000 * MIN_DURATION_S:.0f} ms feature frame")
    return {"wav": encode_wav(samples, sample_rate), "spk": item["speaker"], "cls": str(item["label"]),
            "json": {"source": item["rel"], "speaker": item["speaker"], **info}}


def _items(utts: list[Utterance], root: Path) -> tuple[list[dict], list[str]]:
    speakers = sorted({u.speaker for u in utts})
    index = {s: i for i, s in enumerate(speakers)}
    items = []
    for u in utts:
        path = Path(u.path)
        rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        items.append({"key": u.key, "path": str(path), "rel": rel, "speaker": u.speaker, "label": index[u.speaker]})
    return items, speakers


def build_speaker_shards(layout: VoxCelebLayout, root: str | Path, out_dir: str | Path, *, sample_rate: int = 16000,
                         samples_per_shard: int = 256, seed: int = 0, skip_bad: bool = False,
                         corpus: str = "voxceleb") -> dict[str, dict]:
    """Build `out_dir/train` (labelled by speaker index) and `out_dir/test` (the trial utterances)."""
    root = Path(root).resolve()
    decode = functools.partial(decode_utterance, sample_rate=sample_rate)
    manifests = {}
    for split, utts in (("train", layout.train), ("test", layout.test)):
        items, speakers = _items(utts, root)
        manifests[split] = build_shards(
            items, Path(out_dir) / split, corpus=corpus, split=split, decode=decode,
            config={"sample_rate": sample_rate, "format": "wav-pcm16-mono"},
            samples_per_shard=samples_per_shard, seed=seed, skip_bad=skip_bad,
            extra={"classes": speakers})
    return manifests
