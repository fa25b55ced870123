"""workflows/foolhd.py end to end on real Ray and real shards, at a tiny scale: a generated VoxCeleb-layout corpus
-> identification shards -> the x-vector through the one loop -> per-file attacks as Ray tasks (adversarial wavs,
records, metrics, plots); a rerun reuses the model and skips the attacked files; bad input exits 2 with one
`error:` line and marks nothing complete."""
import json

import pytest
from conftest import LOCAL_MODE

from workflows import foolhd

pytestmark = [pytest.mark.slow, pytest.mark.local_mode]

TINY = ["demo.source=generated", "demo.speakers=3", "demo.sessions=2", "demo.utts=2", "demo.width=16",
        "demo.stats_width=16", "demo.epochs=2", "demo.crop_seconds=1.0", "demo.attack_files=2",
        "demo.attack_channels=4", "demo.attack_iterations=3", "demo.attack_targeted_iterations=3",
        "attack.init=random", "attack.bim_steps=2", "data.samples_per_shard=4", "train.batch_size=3", LOCAL_MODE]


def _args(out, *extra):
    return ["--out", str(out), *[a for kv in TINY + list(extra) for a in ("--set", kv)]]


@pytest.fixture(scope="module")
def demo_run(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("foolhd")
    assert foolhd.main(_args(out)) == 0
    return out


def test_demo_end_to_end(demo_run):
    report = json.loads((demo_run / "metrics.json").read_text())
    assert set(report["attacks"]) == {"untargeted", "targeted", "fgsm", "bim"}
    assert 0 <= report["identification_accuracy"] <= 1 and len(report["data"]["speakers"]) == 3
    files = report["files"]
    assert len(files) == 2
    for rec in files:
        for method in ("untargeted", "fgsm", "bim"):
            res = rec[method]
            assert (demo_run / res["wav"]).is_file() and isinstance(res["success"], bool)
            assert res["snr_db"] > -20
        assert rec["targeted"] is None or rec["targeted"]["target"] != rec["clean_pred"]
        # the matched baseline: FGSM's perturbation has FoolHD's untargeted SNR (up to 16-bit rounding / clipping)
        assert abs(rec["fgsm"]["snr_db"] - rec["untargeted"]["snr_db"]) < 1.5
    assert (demo_run / "plots" / "spectrograms.png").stat().st_size > 0
    assert (demo_run / "plots" / "success_vs_pesq.png").stat().st_size > 0
    assert "| untargeted | 2 |" in (demo_run / "results.md").read_text()


def test_rerun_resumes(demo_run, capsys):
    records = sorted((demo_run / "attacks").rglob("*.json"))
    assert len(records) == 2
    records[0].unlink()            # as if interrupted after one file
    assert foolhd.main(_args(demo_run)) == 0
    log = capsys.readouterr().out
    assert "is up to date" in log and "1 of 2 files already attacked" in log and "1 files as Ray tasks" in log


def test_chain_mode_carries_the_autoencoder_from_file_to_file(demo_run, tmp_path, capsys):
    """attack.fresh_per_file=false (the official loop): the first file starts as in the fresh mode, so its attack is
    the same; the second starts from the first file's trained autoencoder, so its attack differs."""
    out = tmp_path / "chain"
    assert foolhd.main(_args(out, f"model.load={demo_run / 'model.pt'}", "attack.fresh_per_file=false")) == 0
    assert "one autoencoder carried over the files" in capsys.readouterr().out

    def attacks(run):
        records = [json.loads(p.read_text()) for p in sorted((run / "attacks").rglob("*.json"))]
        return [{k: v for k, v in r["untargeted"].items() if k != "wav"} for r in sorted(records,
                                                                                         key=lambda r: r["index"])]
    fresh, chain = attacks(demo_run), attacks(out)
    assert len(chain) == 2 and chain[0] == fresh[0] and chain[1] != fresh[1]


def _error(capsys, lines: int = 1) -> str:
    """The error message: one `error:` line (the shard writer names each bad file on a line of its own)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Ray's logs")]
    assert err[0].startswith("error:") and len(err) <= lines and not any(e.startswith("error:") for e in err[1:]), err
    return "\n".join(err)


def test_bad_input(demo_run, tmp_path, capsys):
    assert foolhd.main(_args(tmp_path / "a", "attack.iterations=0")) == 2
    assert "attack.iterations" in _error(capsys)
    assert foolhd.main(_args(tmp_path / "b", "attack.target=id99999")) == 2
    assert "id99999" in _error(capsys)
    assert not (tmp_path / "b" / "metrics.json").exists()
    other = tmp_path / "other.pt"      # a model.pt of another architecture (width 8 instead of 16)
    import torch

    from trainers.foolhd.xvector import IdentificationLearner, XVectorSID

    torch.save({"state": {"model": IdentificationLearner(XVectorSID(3, width=8)).state_dict()}}, other)
    assert foolhd.main(_args(tmp_path / "c", f"model.load={other}")) == 2
    assert "not an x-vector of this architecture" in _error(capsys)
    corpus = next((demo_run / "data").glob("generated-*"))
    bad = tmp_path / "corpus"
    import shutil

    shutil.copytree(corpus, bad)
    wav = sorted(bad.rglob("*.wav"))[0]
    wav.write_bytes(b"RIFF....not audio")
    assert foolhd.main(["--data", str(bad), "--out", str(tmp_path / "d"), "--set", "attack.max_files=1"]) == 2
    assert wav.name in _error(capsys, lines=3)
    assert not (tmp_path / "d" / "shards" / "train" / "manifest.json").exists()
