"""workflows/morph.py end to end on a tiny generated paired corpus (real Ray, real shards), the rerun that reuses
what is trained, and bad input (one `error:` line, exit 2, nothing written that looks complete)."""
import json
import shutil

import pytest
from conftest import LOCAL_MODE

from workflows import morph

pytestmark = pytest.mark.local_mode   # trains in Ray Train's local mode: runs last (conftest.py)

TINY = ["--epochs", "1", "--set", "demo.n_train_ids=4", "--set", "demo.n_test_ids=3", "--set", "demo.images_per_id=4",
        "--set", "demo.sessions=1", "--set", "voice.train.epochs=1", "--set", "faces.train.epochs=1",
        "--set", "voice.train.batch_size=4", "--set", "faces.train.batch_size=8", "--set", "train.batch_size=8",
        "--set", "eval.lambdas=[5.0]", "--set", "eval.grid_rows=2", "--set", "model.width=8",
        "--set", LOCAL_MODE]


@pytest.fixture(scope="module")
def demo(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("morph")
    assert morph.main(["--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_demo_end_to_end(demo, capsys):
    report = json.loads((demo / "metrics.json").read_text())
    assert report["data"]["identities"] == {"train": 4, "test": 3}
    assert set(report["shards"]) == {"voice-train", "voice-test", "face-train", "face-test"}
    assert report["shards"]["face-test"]["num_samples"] == 12 and report["shards"]["voice-train"]["num_samples"] == 8
    assert set(report["results"]) == {"1", "5"}   # loss.lam and eval.lambdas, one model each
    r = report["results"]["1"]
    assert set(r) == {"voice", "no_voice", "random_voice", "unmorphed", "chance"}
    for cond in r.values():
        assert all(0 <= cond[f"{w}@{k}"] <= 1 for w in "ab" for k in (1, 5, 10))
    # 3 test identities x 2 targets x 2 other owners x 1 voice (one session of 2 utterances, eval.voices=2 -> 2)
    assert report["queries"] == 3 * 2 * 2 * 2
    assert r["unmorphed"]["a@10"] == 1.0 and r["chance"]["b@10"] == 1.0   # 11 gallery images: top-10 misses 1
    assert report["history"]["morph lambda=1"][0]["epoch"] == 1 and "classifier" in report["history"]
    assert "trained here" in report["voice_encoder"]["source"]
    for png in report["plots"].values():
        assert (demo / "plots").is_dir() and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    table = (demo / "results.md").read_text()
    assert "| 1 | voice |" in table and "| - | chance |" in table and "| 5 | no_voice |" in table
    # the rerun reuses the shards and every trained model
    assert morph.main(["--out", str(demo), *TINY]) == 0
    log = capsys.readouterr().out
    assert log.count("is up to date") == 5 and "up to date (1 shards" in log
    assert json.loads((demo / "metrics.json").read_text())["results"] == report["results"]


@pytest.mark.slow
def test_speaker_model_as_frozen_voice_encoder(demo, tmp_path, capsys):
    """voice.model: a speaker workflow's model.pt (its config.yaml beside it) is loaded instead of training one."""
    import yaml

    spk = tmp_path / "speaker"
    spk.mkdir()
    shutil.copy(demo / "voice" / "model.pt", spk / "model.pt")
    conf = json.loads((demo / "metrics.json").read_text())["config"]
    (spk / "config.yaml").write_text(yaml.safe_dump({
        "model": {"encoder": conf["voice"]["encoder"], "encoder_args": conf["voice"]["encoder_args"],
                  "embed_dim": conf["voice"]["embed_dim"]},
        "data": {"sample_rate": 16000, "num_mel_bins": conf["voice"]["num_mel_bins"]}}))
    out = tmp_path / "out"
    shutil.copytree(demo / "data", out / "data")
    args = ["--out", str(out), *TINY, "--voice-model", str(spk / "model.pt"), "--set", "eval.lambdas=[]"]
    assert morph.main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["voice_encoder"]["source"].startswith("speaker workflow model") and not (out / "voice").exists()
    log = capsys.readouterr().out
    assert "[voice] frozen encoder from" in log and "morph-voice-" not in log   # loaded, no voice training run


@pytest.mark.parametrize("args, match", [
    (["--voices", "/nonexistent"], "data.voice_root and data.face_root go together"),
    (["--set", "model.controller=concat"], "unknown model.controller 'concat'"),
    (["--set", "loss.p_same=1"], "loss.p_same must be in"),
    (["--set", "loss.lam=-1"], "loss.lam must be >= 0"),
    (["--set", "eval.lambdas=[a]"], "eval.lambdas must be a list"),
    (["--voice-model", "/nonexistent/model.pt"], "voice.model /nonexistent/model.pt does not exist"),
    (["--set", "voice.head.name=nope"], "nope"),
])
def test_bad_config_exits_2_before_data(tmp_path, capsys, args, match):
    assert morph.main(["--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert not (tmp_path / "o" / "metrics.json").exists() and not (tmp_path / "o" / "shards").exists()


def test_unpaired_corpus_exits_2_naming_it(tmp_path, capsys):
    from datasets.synthetic.morph import generate_morph_corpus

    root = generate_morph_corpus(tmp_path / "c", n_train_ids=2, n_test_ids=2, sessions=1, utts_per_session=1,
                                 images_per_id=1, image_size=16, min_dur=0.3, max_dur=0.3)
    victim = sorted((root / "faces").iterdir())[-1]
    shutil.rmtree(victim)
    out = tmp_path / "o"
    assert morph.main(["--out", str(out), "--voices", str(root / "voices"), "--faces", str(root / "faces")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no face folder {victim}" in err[0] and "--skip-bad" in err[0], err
    assert not (out / "metrics.json").exists() and not (out / "shards").exists()
