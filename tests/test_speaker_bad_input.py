"""Bad input to workflows/speaker.py: one clear error naming the problem, exit code 2, and no shard set
left looking complete. Layout- and audio-level cases are in test_voxceleb_layout.py / test_audio.py."""
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
