"""Bad input to workflows/speaker.py: one clear error naming the problem, exit code 2, and no shard set
left looking complete. Layout- and audio-level cases are in test_voxceleb_layout.py / test_audio.py."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datasets.shards import MANIFEST, read_manifest
from datasets.voxceleb.layout import find_layout
from datasets.voxceleb.shards import build_speaker_shards
from workflows.speaker import main

ROOT = Path(__file__).resolve().parents[1]


def tiny_corpus(root: Path) -> Path:
    """3 training speakers x 2 utterances + 2 test speakers, VoxCeleb1 layout, 16 kHz mono."""
    rng = np.random.default_rng(0)
    rels = [f"id1000{s}/vid{s}a/0000{u}.wav" for s in range(1, 4) for u in (1, 2)]
    rels += ["id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav", "id10271/1gtz-CUIygI/00001.wav"]
    for rel in rels:
        path = root / "wav" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * rng.standard_normal(16000).astype(np.float32), 16000, subtype="PCM_16")
    (root / "veri_test2.txt").write_text(
        "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
        "0 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00001.wav\n")
    return root


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_missing_root(tmp_path, capsys):
    code, err = run_main(capsys, "--data", tmp_path / "nope", "--out", tmp_path / "out")
    assert code == 2 and "nope" in err and err.startswith("error:")


def test_empty_root(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_main(capsys, "--data", tmp_path / "empty", "--out", tmp_path / "out")
    assert code == 2 and "empty" in err


def test_trial_naming_missing_file(tmp_path, capsys):
    root = tiny_corpus(tmp_path / "vox")
    with open(root / "veri_test2.txt", "a") as f:
        f.write("1 id10270/x6uYqmx31kE/00001.wav id10999/gone/00001.wav\n")
    code, err = run_main(capsys, "--data", root, "--out", tmp_path / "out")
    assert code == 2 and "veri_test2.txt" in err and "id10999/gone/00001.wav" in err and "veri_test2.txt:3" in err


@pytest.mark.parametrize("args, message", [
    (["--encoder", "nonet"], "unknown encoder 'nonet'"),
    (["--head", "nohead"], "unknown head 'nohead'"),
    (["--set", "train.nosuch=1"], "unknown config key 'train.nosuch'"),
    (["--set", "head.nosuch=1"], "nosuch"),
    (["--head", "arcface", "--set", "head.m=-0.1"], "margin m"),
    (["--head", "cosface", "--set", "head.m=-0.1"], "margin m"),
    (["--head", "sphereface2", "--set", "head.lam=1.0"], "lam (lambda) must be in (0, 1)"),
    (["--head", "sphereface2", "--set", "head.t=0.5"], "t must be in [1, inf]"),
    (["--head", "sphereface", "--set", "head.m=0"], "sphereface m must be"),
    (["--head", "spherefacer", "--set", "head.magnitude=v9"], "magnitude"),
    (["--head", "mp", "--set", "head.k=1"], "K >= 2"),
    (["--head", "mmp", "--set", "head.k=4", "--set", "train.batch_size=6"], "at least 2 classes"),
    (["--set", "train.lr_milestones=[0]"], "lr_milestones"),
])
def test_bad_names_fail_before_data(tmp_path, capsys, args, message):
    # the data root does not exist either: config errors must come first
    code, err = run_main(capsys, "--data", tmp_path / "nope", "--out", tmp_path / "out", *args)
    assert code == 2 and message in err


@pytest.mark.parametrize("damage", ["corrupt", "zero-length"])
def test_bad_wav_fails_naming_it_and_leaves_no_shard_set(ray_local, tmp_path, capsys, damage):
    root = tiny_corpus(tmp_path / "vox")
    bad = root / "wav" / "id10002/vid2a/00001.wav"
    bad.write_bytes(b"RIFF\x00garbage" * 10 if damage == "corrupt" else b"")
    out = tmp_path / "out"
    code, err = run_main(capsys, "--data", root, "--out", out, "--epochs", "1")
    assert code == 2 and str(bad) in err and "--skip-bad" in err
    assert not (out / "shards" / "train" / MANIFEST).exists()
    assert not list((out / "shards" / "train").glob("*.tar"))


def test_skip_bad_records_the_file(ray_local, tmp_path):
    root = tiny_corpus(tmp_path / "vox")
    bad = root / "wav" / "id10002/vid2a/00001.wav"
    bad.write_bytes(b"")
    manifests = build_speaker_shards(find_layout(root), root, tmp_path / "shards", skip_bad=True)
    assert [s["path"] for s in manifests["train"]["skipped"]] == [str(bad)]
    assert manifests["train"]["num_samples"] == 5


def test_other_rates_and_channels_are_resampled_and_recorded(ray_local, tmp_path):
    import webdataset as wds

    root = tiny_corpus(tmp_path / "vox")
    odd = root / "wav" / "id10003/vid3a/00001.wav"
    sf.write(odd, 0.1 * np.random.default_rng(1).standard_normal((44100, 2)).astype(np.float32), 44100)
    build_speaker_shards(find_layout(root), root, tmp_path / "shards")
    paths = [str(tmp_path / "shards" / "train" / s["name"])
             for s in read_manifest(tmp_path / "shards" / "train")["shards"]]
    meta = {s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(paths, shardshuffle=False)}
    info = meta["id10003/vid3a/00001"]
    assert info["orig_sr"] == 44100 and info["orig_channels"] == 2 and info["resampled"] and info["mixed_down"]
    assert not meta["id10001/vid1a/00001"]["resampled"]


def test_cli_exit_code_is_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "workflows" / "speaker.py"), "--data", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_another_demo_section_gets_its_own_corpus_folder(tmp_path):
    """Changing a demo.* key against an existing --out: a second corpus beside the first (a raw
    ValueError from the generator before: it refused to mix two corpora in one folder)."""
    from trainers.config import load_config
    from workflows.speaker import SpeakerConfig, corpus_root

    small = ["demo.n_train_speakers=1", "demo.n_test_speakers=2", "demo.sessions_per_speaker=1",
             "demo.utts_per_session=2"]
    first = corpus_root(load_config(SpeakerConfig, None, small), tmp_path, log=lambda *a: None)
    second = corpus_root(load_config(SpeakerConfig, None, small + ["demo.seed=1"]), tmp_path, log=lambda *a: None)
    assert first != second and first.parent == second.parent == tmp_path / "data"
    assert find_layout(first).trials and find_layout(second).trials


def test_an_infeasible_demo_section_is_one_error_line(tmp_path, capsys):
    code, err = run_main(capsys, "--out", tmp_path / "o", "--set", "demo.n_test_speakers=1")
    assert code == 2 and err.startswith("error: demo corpus: need >= 1 train speaker, >= 2 test speakers")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("workflow, key", [("speaker", "data.sample_rate"), ("speaker", "data.num_frames"),
                                           ("face", "data.image_size"), ("sed", "data.sample_rate"),
                                           ("esc50_actions", "audio.hop"), ("semiweak", "width")])
def test_a_size_or_rate_below_one_fails_before_any_data(tmp_path, capsys, workflow, key):
    """Checked by validate(), before a corpus is generated or Ray starts (a negative sample rate used to
    generate a corpus, start Ray and then blame every file as unreadable). In this process: the exit code and the
    one line come from the workflow's main(), as the command line gets them (test_cli_exit_code_is_nonzero)."""
    out = tmp_path / "o"
    code = importlib.import_module(f"workflows.{workflow}").main(["--out", str(out), "--set", f"{key}=-1"])
    assert code == 2 and capsys.readouterr().err.strip() == f"error: config key '{key}' must be > 0, got -1"
    assert not out.exists()


def test_audio_shorter_than_a_feature_frame_is_caught_at_shard_time(ray_local, tmp_path, capsys):
    """A valid 10-sample wav used to pass the shard build and crash training inside Ray Data, unnamed."""
    root = tiny_corpus(tmp_path / "vox")
    short = root / "wav" / "id10002/vid2a/00001.wav"
    sf.write(short, np.zeros(10, dtype=np.float32), 16000, subtype="PCM_16")
    code, err = run_main(capsys, "--data", root, "--out", tmp_path / "out", "--epochs", "1")
    assert code == 2 and f"{short} is 0.6 ms long, shorter than one 25 ms feature frame" in err and "--skip-bad" in err
    manifests = build_speaker_shards(find_layout(root), root, tmp_path / "shards", skip_bad=True)
    assert [s["path"] for s in manifests["train"]["skipped"]] == [str(short)]


def test_a_batch_larger_than_the_training_set_fails_before_training(ray_local, tmp_path, capsys):
    root = tiny_corpus(tmp_path / "vox")   # 6 training utterances
    code, err = run_main(capsys, "--data", root, "--out", tmp_path / "out", "--epochs", "1",
                         "--set", "train.batch_size=8")
    assert code == 2 and err.strip() == ("error: train.batch_size=8 is larger than the 6 training utterances each of "
                                         "the 1 training worker(s) gets (6 in all): lower train.batch_size or "
                                         "scale.workers")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_trials_naming_a_skipped_test_file_are_dropped_and_counted(tmp_path):
    """--skip-bad with a bad test utterance: its trials are dropped and counted before training (scoring
    used to fail with MissingEmbeddingError after the whole run); a list left one-sided is refused."""
    from trainers.config import ConfigError
    from workflows.speaker import trial_lists

    root = tiny_corpus(tmp_path / "vox")
    extra = root / "wav" / "id10272/abcdefghijk/00001.wav"
    extra.parent.mkdir(parents=True)
    sf.write(extra, 0.1 * np.ones(16000, dtype=np.float32), 16000, subtype="PCM_16")
    with open(root / "veri_test2.txt", "a") as f:
        f.write("0 id10270/x6uYqmx31kE/00001.wav id10272/abcdefghijk/00001.wav\n")
    lines = []
    lists, dropped = trial_lists(find_layout(root), ["veri_test2"], {"id10271/1gtz-CUIygI/00001"}, lines.append)
    assert dropped == {"veri_test2": 1} and "1 of 3 trials dropped" in lines[0]
    assert list(lists[0].labels) == [1, 0] and "id10271/1gtz-CUIygI/00001" not in lists[0].test
    with pytest.raises(ConfigError, match="no target and non-target trials left .*id10272/abcdefghijk/00001"):
        trial_lists(find_layout(root), ["veri_test2"], {"id10271/1gtz-CUIygI/00001", "id10272/abcdefghijk/00001"},
                    lines.append)
