"""The AVA-ActiveSpeaker layout reader, the conversation generator and PyAV decoding (real mp4 files, no Ray; the
shards' byte-identity runs in test_avspeaker_e2e.py, which has Ray up)."""
import shutil

import numpy as np
import pytest
import soundfile as sf

from datasets.avspeaker.layout import LayoutError, Windowing, find_videos, parse_row, speaking_timeline, windows
from datasets.avspeaker.roles import RoleRules, segment_roles, turn_holder
from datasets.avspeaker.shards import Decoding, decode_window, frame_shape, load_npy, read_frames, video_items
from datasets.synthetic import avspeaker as gen

W = Windowing(window_s=2.0, segment_s=0.5, grid_s=0.1, max_tracks=3)
D = Decoding(frames_per_segment=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """4 generated conversations of 4 s (3 train, 1 test) in the AVA layout."""
    return gen.generate(tmp_path_factory.mktemp("av") / "ava", videos=4, seconds=4.0, seed=3, log=lambda m: None)


def test_parse_row_and_bad_rows():
    ok = parse_row(["v1", "902.05", "0.1", "0.2", "0.3", "0.5", "SPEAKING_AUDIBLE", "v1_0900_0960:1"], "f.csv row 1")
    assert ok.speaking and ok.box == (0.1, 0.2, 0.3, 0.5) and ok.t == 902.05
    cases = [
        (["v1", "1.0", "0.1", "0.2", "1.3", "0.5", "NOT_SPEAKING", "e"], "normalized to \\[0, 1\\]"),
        (["v1", "1.0", "0.4", "0.2", "0.3", "0.5", "NOT_SPEAKING", "e"], "x1 < x2"),
        (["v1", "1.0", "0.1", "0.2", "0.3", "0.5", "TALKING", "e"], "unknown label 'TALKING'"),
        (["v1", "1.0", "0.1", "0.2", "0.3", "0.5", "NOT_SPEAKING"], "7 fields"),
        (["v1", "abc", "0.1", "0.2", "0.3", "0.5", "NOT_SPEAKING", "e"], "must be numbers"),
    ]
    for fields, message in cases:
        with pytest.raises(LayoutError, match=f"f.csv row 7: .*{message}"):
            parse_row(fields, "f.csv row 7")


def test_generated_corpus_layout(corpus):
    train, test = find_videos(corpus, "train"), find_videos(corpus, "test")
    assert [len(train), len(test)] == [3, 1]
    v = train[0]
    assert v.video.endswith(".mp4") and v.wav.endswith(".wav") and v.main_wav.endswith(".main.wav")
    assert frame_shape(v.video) == (gen.HEIGHT, gen.WIDTH)
    entities = sorted({r.entity for r in v.rows})
    assert len(entities) in (2, 3) and len(v.rows) == len(entities) * 40       # 10 rows per second per face
    # the main voice is the mixture's part spoken by whoever holds the turn: silent where nobody holds it,
    # and every speaking track's voice is audible in the mixture where its rows say SPEAKING_AUDIBLE
    speaking, present = speaking_timeline(v.rows, entities, 0.0, 40, 0.1)
    assert present.all()
    holder = turn_holder(speaking, 0.1, RoleRules())
    main, sr = sf.read(v.main_wav)
    mix, _ = sf.read(v.wav)
    frames = main[:40 * 1600].reshape(40, 1600)
    assert np.abs(frames[holder < 0]).max(initial=0) == 0
    energy = (mix[:40 * 1600].reshape(40, 1600) ** 2).mean(axis=1)
    # medians: a voice starting inside a 0.1 s frame labelled silent puts it in the silent frames' mean (with the
    # generated voices, where flite is not installed: mean ratio 6.3, median ratio 520)
    assert np.median(energy[speaking.any(axis=0)]) > 10 * np.median(energy[~speaking.any(axis=0)])


def test_generator_is_deterministic_and_a_rerun_is_a_noop(corpus, tmp_path):
    again = gen.generate(tmp_path / "ava", videos=4, seconds=4.0, seed=3, log=lambda m: None)
    for f in sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file()):
        assert (again / f).read_bytes() == (corpus / f).read_bytes(), f
    stamp = (again / ".complete").stat().st_mtime_ns
    gen.generate(again, videos=4, seconds=4.0, seed=3, log=lambda m: None)
    assert (again / ".complete").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other parameters"):
        gen.generate(again, videos=5, seconds=4.0, seed=3, log=lambda m: None)


def test_encoding_the_same_frames_again_gives_the_same_mp4(tmp_path):
    """x264 with macroblock-tree rate control gave these frames other bytes now and then in one process (three
    distinct files in 16 encodes, measured; in this test too); the generator's settings must give one."""
    mouths = np.clip(np.abs(np.sin(np.arange(250)[None] / np.array([[3.0], [5.0], [7.0]]))) - 0.3, 0, 1)
    video, _ = gen.draw_frames(np.random.default_rng(0), mouths, [(30, 55), (80, 50), (132, 60)], [160, 190, 220])
    encodes = set()
    for i in range(16):
        gen.write_mp4(tmp_path / f"{i}.mp4", video)
        encodes.add((tmp_path / f"{i}.mp4").read_bytes())
    assert len(encodes) == 1


def test_mouths_follow_their_own_voice(corpus):
    """Mouth opening measured in the decoded mp4 (dark pixels in the mouth region of the face box) correlates
    with the speaking labels of that face far better than with another face's."""
    v = find_videos(corpus, "train")[0]
    entities = sorted({r.entity for r in v.rows})
    times = np.arange(40) * 0.1 + 0.05
    frames = read_frames(v.video, times).astype(float)
    speaking, _ = speaking_timeline(v.rows, entities, 0.0, 40, 0.1)
    openness = np.zeros((len(entities), 40))
    for k, e in enumerate(entities):
        rows = [r for r in v.rows if r.entity == e]
        for j, r in enumerate(rows):
            x1, y1, x2, y2 = r.box
            h, w = frames.shape[1:]
            patch = frames[j, int((y1 + 0.55 * (y2 - y1)) * h):int((y1 + 0.9 * (y2 - y1)) * h),
                           int((x1 + 0.3 * (x2 - x1)) * w):int((x1 + 0.7 * (x2 - x1)) * w)]
            openness[k, j] = (patch < 100).mean()
    own = [np.corrcoef(openness[k], speaking[k])[0, 1] for k in range(len(entities)) if speaking[k].std() > 0]
    assert own and min(own) > 0.3


def test_read_frames_picks_the_frame_at_each_time(tmp_path):
    """Frame f of a 25 fps mp4 is painted with brightness 8 f: decoding at t returns frame round(25 t)."""
    video = np.stack([np.full((gen.HEIGHT, gen.WIDTH, 3), 8 * f, np.uint8) for f in range(30)])
    gen.write_mp4(tmp_path / "ramp.mp4", video)
    times = np.array([0.0, 0.2, 0.52, 1.0])
    got = read_frames(str(tmp_path / "ramp.mp4"), times).mean(axis=(1, 2))
    assert np.allclose(got, 8 * np.round(times * 25), atol=3)


def test_decode_window_matches_the_csv(corpus):
    v = find_videos(corpus, "train")[0]
    items = video_items([v], W, RoleRules())
    assert [it["start"] for it in items] == [0.0, 2.0]
    out = decode_window(items[1], W, D)
    faces, label, mel = load_npy(out["faces.npy"]), load_npy(out["label.npy"]), load_npy(out["mel.npy"])
    n = len(items[1]["entities"])
    assert faces.shape == (3, 4, 2, 32, 32) and mel.shape == (4, 50, 40) and label.shape == (4, 3, 4)
    assert faces[:n].mean() > 50 and (faces[n:] == 0).all()             # real crops; padded tracks empty
    # roles = segment_roles over the whole video's timeline (the turn started before the window), second half
    speaking, _ = speaking_timeline(v.rows, items[1]["entities"], 0.0, 40, 0.1)
    seg, main_id, switch = segment_roles(speaking, 0.1, 5, RoleRules())
    assert (label[0, :n] == seg[:, 4:]).all() and (label[3, 0] == main_id[4:]).all()
    assert out["json"]["switches"] == [s - 4 for s in np.flatnonzero(switch) if s > 4]
    mix = load_npy(out["mix.npy"]).astype(float) / 32768
    wav, _ = sf.read(v.wav)
    assert np.allclose(mix, wav[2 * 16000:4 * 16000], atol=1e-4)


def test_missing_and_undecodable_videos(corpus, tmp_path):
    root = tmp_path / "ava"
    shutil.copytree(corpus, root)
    csv_file = next((root / "ava_activespeaker_train_v1.0").glob("*.csv"))
    vid = csv_file.name.split("-")[0]
    (root / "videos" / f"{vid}.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(LayoutError, match=f"{vid}.mp4: cannot decode the video"):
        frame_shape(str(root / "videos" / f"{vid}.mp4"))
    (root / "videos" / f"{vid}.mp4").unlink()
    with pytest.raises(LayoutError, match=f"{csv_file.name} names video '{vid}'.*add the video"):
        find_videos(root, "train")


def test_windows_pick_most_annotated_tracks():
    from datasets.avspeaker.layout import Row, Video

    rows = [Row("v", 0.05 + 0.1 * j, (0.1, 0.1, 0.2, 0.2), "NOT_SPEAKING", e) for e in "abcd" for j in range(20)
            if not (e == "d" and j % 2)]
    ws = windows(Video("v", "", "", "", rows, "x.csv"), W)
    assert len(ws) == 1 and ws[0]["entities"] == ["a", "b", "c"] and ws[0]["key"] == "v/w000000000"
