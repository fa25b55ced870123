"""DCASE remix: real-layout readers, bad input, the seeded plan, SNRs recomputed from the shards."""
import json
import math

import numpy as np
import pytest

from datasets.audio import AudioError, decode_wav, encode_wav, load_audio
from datasets.dcase import CLIP_S, MAX_EVENT_S, ONSETS, build_remix_shards, mix, plan_mixtures, read_fsd, read_tau
from datasets.errors import LayoutError
from datasets.shards import shard_paths
from datasets.synthetic.dcase import EVENT_LABELS, generate_dcase_corpus

SR, HOP = 16000, 512


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_dcase_corpus(tmp_path_factory.mktemp("dcase"), scenes_per_class=2, events_per_label=4,
                                 sample_rate=SR)


def test_readers_real_layouts_and_verified_only(corpus):
    tau, fsd = corpus
    scenes, events = read_tau(tau), read_fsd(fsd)
    assert len(scenes) == 8 and all(s.rel.startswith("audio/") for s in scenes)
    rows = (fsd / "train.csv").read_text().splitlines()[1:]
    verified = [r for r in rows if r.endswith(",1")]
    assert len(events) == len(verified) < len(rows)          # unverified events dropped
    assert {e.label for e in events} == set(EVENT_LABELS)


def test_plan_is_seeded_with_distinct_labels_per_mixture(corpus):
    scenes, events = read_tau(corpus[0]), read_fsd(corpus[1])
    plan = plan_mixtures(scenes, events, per_fold=5, seed=3)
    assert plan == plan_mixtures(scenes, events, per_fold=5, seed=3)
    assert plan != plan_mixtures(scenes, events, per_fold=5, seed=4)
    assert [p["fold"] for p in plan] == [f for f in range(1, 5) for _ in range(5)]
    fold_of = {}
    for p in plan:
        assert [e["onset"] for e in p["events"]] == list(ONSETS)
        assert len({e["label"] for e in p["events"]}) == len(ONSETS)
        for e in p["events"]:
            assert fold_of.setdefault(e["fname"], p["fold"]) == p["fold"]   # an event lives in one fold


def _recomputed_snrs(out: dict, item: dict) -> list[float]:
    """SNR of each event from the rendered mixture: undo the mix gain, subtract the normalized scene
    (re-read from its source file), and compare energies over each event's window."""
    meta = out["json"]
    mixture, sr = decode_wav(out["wav"])
    assert sr == SR and len(mixture) == int(CLIP_S * SR)
    scene = load_audio(item["path"], SR)[0][:len(mixture)] * meta["scene_gain"]
    events = mixture / meta["mix_gain"] - scene
    snrs = []
    for e in meta["events"]:
        w = slice(int(round(e["onset"] * SR)), int(round(e["offset"] * SR)))
        assert e["offset"] - e["onset"] <= MAX_EVENT_S + 1e-9
        snrs.append(10 * math.log10(np.mean(events[w] ** 2) / np.mean(scene[w] ** 2)))
    return snrs


@pytest.mark.parametrize("snr", [0, 10, 20])
def test_each_event_is_mixed_at_its_snr(corpus, snr):
    plan = plan_mixtures(read_tau(corpus[0]), read_fsd(corpus[1]), per_fold=2, seed=0)
    for item in plan[:4]:
        out = mix({**item, "snr": snr}, SR, HOP)
        assert out["json"]["labels"] == sorted(e["label"] for e in item["events"])
        assert _recomputed_snrs(out, item) == pytest.approx([snr] * 3, abs=0.05)


def test_shards_are_deterministic_and_hold_the_snr(ray_local, corpus, tmp_path):
    plan = plan_mixtures(read_tau(corpus[0]), read_fsd(corpus[1]), per_fold=2, seed=0)
    kw = dict(snrs=[10], sample_rate=SR, hop=HOP, labels=list(EVENT_LABELS), samples_per_shard=3)
    a = build_remix_shards(plan, tmp_path / "a", **kw)[10]
    b = build_remix_shards(plan, tmp_path / "b", **kw)[10]
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["num_samples"] == len(plan) and a["classes"] == list(EVENT_LABELS)
    rows = ray_local.data.read_webdataset(shard_paths(tmp_path / "a" / "snr10")).take_all()
    by_key = {p["key"]: p for p in plan}
    for row in rows[:3]:
        meta = row["json"] if isinstance(row["json"], dict) else json.loads(row["json"])
        item = by_key[row["__key__"].rsplit("/", 1)[0]]
        assert meta["snr"] == 10 and meta["fold"] == item["fold"]
        assert _recomputed_snrs({"wav": row["wav"], "json": meta}, item) == pytest.approx([10] * 3, abs=0.05)


# ----------------------------------------------------------------------------- bad input

def test_missing_meta_columns_name_the_file_and_line(tmp_path):
    (tmp_path / "meta.csv").write_text("filename\tscene\naudio/a.wav\tpark\n")
    with pytest.raises(LayoutError, match=r"meta.csv line 1: missing column\(s\) scene_label, identifier"):
        read_tau(tmp_path)
    (tmp_path / "train.csv").write_text("fname,label\n1.wav,Bark\n")
    with pytest.raises(LayoutError, match=r"train.csv line 1: missing column\(s\) manually_verified"):
        read_fsd(tmp_path)


def test_unknown_label_names_the_line(corpus, tmp_path):
    lines = (corpus[1] / "train.csv").read_text().splitlines()
    fname = lines[1].split(",")[0]
    lines[1] = f"{fname},Vuvuzela,1"
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LayoutError, match=r"train.csv line 2: unknown label 'Vuvuzela'"):
        read_fsd(tmp_path)


def _item(corpus, tmp_path, scene=None, event=None):
    plan = plan_mixtures(read_tau(corpus[0]), read_fsd(corpus[1]), per_fold=1, seed=0)
    item = {**plan[0], "snr": 10}
    if scene is not None:
        item["path"] = str(scene)
    if event is not None:
        item["events"] = [{**item["events"][0], "path": str(event)}] + item["events"][1:]
    return item


def test_short_scene_clip_is_refused(corpus, tmp_path):
    short = tmp_path / "short.wav"
    short.write_bytes(encode_wav(np.full(SR * 9, 0.1, np.float32), SR))
    with pytest.raises(AudioError, match=r"short.wav is 9.00 s long; the protocol mixes 10 s scenes"):
        mix(_item(corpus, tmp_path, scene=short), SR, HOP)


def test_event_shorter_than_a_frame_is_refused(corpus, tmp_path):
    tiny = tmp_path / "tiny.wav"
    tiny.write_bytes(encode_wav(np.full(HOP - 1, 0.1, np.float32), SR))
    with pytest.raises(AudioError, match=r"tiny.wav is 511 samples long, shorter than one frame"):
        mix(_item(corpus, tmp_path, event=tiny), SR, HOP)


def test_unreadable_audio_is_reported_by_the_build(ray_local, corpus, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all")
    plan = [_item(corpus, tmp_path, event=junk)]
    plan[0].pop("snr")
    from datasets.shards import ShardError
    with pytest.raises(ShardError, match=r"junk.wav"):
        build_remix_shards(plan, tmp_path / "out", snrs=[0], sample_rate=SR, hop=HOP, labels=list(EVENT_LABELS))
    assert not (tmp_path / "out" / "snr0" / "manifest.json").exists()
