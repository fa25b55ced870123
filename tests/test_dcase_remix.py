"""DCASE remix: real-layout readers, bad input, the seeded plan, SNRs recomputed from the shards."""
import json
import math

import numpy as np
import pytest

from datasets.audio import AudioError, decode_wav, encode_wav, load_audio
from datasets.dcase import (
    CLIP_S,
    MAX_EVENT_S,
    ONSETS,
    EventClip,
    SceneClip,
    build_remix_shards,
    mix,
    plan_mixtures,
    read_fsd,
    read_tau,
)
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
    assert [e.fname for e in events] == [r.split(",")[0] for r in rows]          # every row, file order
    assert sum(e.verified for e in events) == sum(r.endswith(",1") for r in rows) < len(rows)
    assert {e.label for e in events} == set(EVENT_LABELS)
    plan = plan_mixtures(scenes, events, per_fold=20)
    assert {ev["fname"] for p in plan for ev in p["events"]} <= {e.fname for e in events if e.verified}


def test_plan_draws_consecutive_triples_of_a_seeded_shuffle():
    """Kong's create_mixture_yaml by hand: folds from a RandomState(1234) permutation of every row; then a
    fresh RandomState(1234) shuffles the scenes once and, per fold, the fold's verified events once per
    repeat (each repeat is the last shuffle); mixtures take consecutive triples, labels may repeat."""
    n = 30
    events = [EventClip(f"/e{i}", f"e{i}.wav", ("Bark", "Meow")[i % 2], verified=i % 5 != 4) for i in range(n)]
    scenes = [SceneClip(f"/s{i}", f"audio/s{i}.wav", "park") for i in range(50)]
    per_fold = 3                         # 9 events per fold from 6 verified: drawn twice
    plan = plan_mixtures(scenes, events, per_fold=per_fold)
    assert plan == plan_mixtures(scenes, events, per_fold=per_fold)
    assert plan != plan_mixtures(scenes, events, per_fold=per_fold, seed=7)

    position = np.random.RandomState(1234).permutation(n)
    fold = {int(position[k]): k % 4 + 1 for k in range(n)}
    rng = np.random.RandomState(1234)
    scene_order = rng.permutation(len(scenes))
    expected = []
    for f in range(1, 5):
        pool = np.array([i for i in range(n) if fold[i] == f and events[i].verified])
        repeats = per_fold * 3 // len(pool) + 1
        for _ in range(repeats):
            rng.shuffle(pool)
        expected.append([f"e{i}.wav" for i in list(pool) * repeats][:per_fold * 3])
    for f in range(1, 5):
        mixtures = [p for p in plan if p["fold"] == f]
        assert [e["fname"] for p in mixtures for e in p["events"]] == expected[f - 1]
    assert [p["scene"] for p in plan] == [f"audio/s{i}.wav" for i in scene_order[:len(plan)]]
    assert all([e["onset"] for e in p["events"]] == list(ONSETS) for p in plan)
    assert any(len({e["label"] for e in p["events"]}) < 3 for p in plan)      # duplicates allowed


def _recomputed_snrs(out: dict, item: dict) -> list[float]:
    """SNR of each event by the reference's definition, from the rendered mixture: undo the mix gain,
    subtract the scene (re-read, scaled to mean-square 1 over its 10 s), fit each event's gain on its
    cut, and compare that gain times the energy of the whole source file with the scene's energy."""
    meta = out["json"]
    mixture, sr = decode_wav(out["wav"])
    assert sr == SR and len(mixture) == int(CLIP_S * SR)
    scene = load_audio(item["path"], SR)[0][:len(mixture)].astype(np.float64)
    scene /= np.sqrt(np.mean(scene ** 2))
    residual = mixture / meta["mix_gain"] - scene
    outside = np.ones(len(mixture), bool)
    snrs = []
    for e, planned in zip(meta["events"], item["events"]):
        assert e["offset"] - e["onset"] <= MAX_EVENT_S + 1e-9
        start, cut = int(round(e["onset"] * SR)), int(round((e["offset"] - e["onset"]) * SR))
        source = load_audio(planned["path"], SR)[0].astype(np.float64)
        assert cut == min(len(source), int(MAX_EVENT_S * SR))
        seg, src = residual[start:start + cut], source[:cut]
        gain = seg @ src / (src @ src)
        snrs.append(10 * math.log10(np.mean((gain * source) ** 2) / np.mean(scene ** 2)))
        outside[start:start + cut] = False
    assert np.abs(residual[outside]).max() < 2 / 32768 / meta["mix_gain"]      # the scene alone there
    return snrs


@pytest.mark.parametrize("snr", [0, 10, 20])
def test_each_event_is_mixed_at_its_snr(corpus, snr):
    plan = plan_mixtures(read_tau(corpus[0]), read_fsd(corpus[1]), per_fold=2, seed=0)
    for item in plan[:4]:
        out = mix({**item, "snr": snr}, SR, HOP)
        assert out["json"]["labels"] == sorted({e["label"] for e in item["events"]})
        assert _recomputed_snrs(out, item) == pytest.approx([snr] * 3, abs=0.05)


@pytest.mark.parametrize("snr, event_gain, inside, outside", [(20, 20.0, 0.6, 0.1), (0, 2.0, 0.75, 0.5)])
def test_mixture_samples_by_hand(tmp_path, snr, event_gain, inside, outside):
    """At 10 Hz: a scene of 100 x 0.5 (ms 1/4 -> gain 2 -> 1.0); an event of 20 x 0.25 then 12 x 0.75
    (ms over the whole file (20/16 + 12*9/16) / 32 = 1/4 -> gain 10^(snr/20) / 0.5), cut to its first
    2 s (20 samples) at 0.5 s; mixture = (events + scene) / (2 * joint peak)."""
    sr = 10
    (tmp_path / "s.wav").write_bytes(encode_wav(np.full(100, 0.5, np.float32), sr))
    (tmp_path / "e.wav").write_bytes(encode_wav(np.r_[np.full(20, 0.25), np.full(12, 0.75)].astype(np.float32), sr))
    item = {"path": str(tmp_path / "s.wav"), "scene": "audio/s.wav", "scene_label": "park", "fold": 1, "snr": snr,
            "events": [{"path": str(tmp_path / "e.wav"), "fname": "e.wav", "label": "Bark", "onset": 0.5}]}
    out = mix(item, sr, hop=1)
    expected = np.full(100, outside)
    expected[5:25] = inside
    assert decode_wav(out["wav"])[0] == pytest.approx(expected, abs=1 / 32768)
    (event,) = out["json"]["events"]
    assert (event["onset"], event["offset"], event["gain"]) == (0.5, 2.5, pytest.approx(event_gain))
    assert out["json"]["scene_gain"] == pytest.approx(2.0)


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
