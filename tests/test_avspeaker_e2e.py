"""workflows/avspeaker.py end to end on a tiny generated corpus (real mp4 + wav + CSV, real Ray, the one loop),
its rerun, and bad AVA input: one `error:` line naming the file/row, exit code 2, no results written."""
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import LOCAL_MODE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workflows import avspeaker  # noqa: E402

pytestmark = pytest.mark.local_mode   # trains in Ray Train's local mode: runs last (conftest.py)

TINY = ["--epochs", "2", "--variant", "transformer,concat", "--set", "data.videos=6", "--set", "data.seconds=4",
        "--set", "window.window_s=2", "--set", "model.dim=16", "--set", "model.layers=1",
        "--set", "train.batch_size=2", "--set", "data.samples_per_shard=4", "--set", LOCAL_MODE]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("avspeaker") / "run"
    assert avspeaker.main(["--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_demo_end_to_end(demo, capsys):
    report = json.loads((demo / "metrics.json").read_text())
    assert set(report["results"]) == {"transformer", "concat"}
    for r in report["results"].values():
        assert 0 <= r["map"] <= 1 and 0 <= r["accuracy"] <= 1 and r["switches_true"] >= 0
        assert -30 < r["si_sdri"] < 30 and r["si_sdr_mix"] < 40
    # 6 videos of 4 s: 2 test, 1 validation, 3 training; two 2-s windows each
    assert {s: report["shards"][s]["num_samples"] for s in ("train", "val", "test")} == {"train": 6, "val": 2,
                                                                                        "test": 4}
    assert report["versions"]["av"] == "18.1.0" and report["versions"]["fast-bss-eval"] == "0.1.4"
    for name in ("frames_transformer", "frames_concat", "mask", "scores", "learning_curves"):
        assert Path(report["plots"][name]).stat().st_size > 2000, name
    table = (demo / "results.md").read_text()
    assert table.startswith("| variant | mAP |") and "| concat |" in table
    # a rerun reuses the corpus, the shards and the trained models, and scores the same
    before = report["results"]
    capsys.readouterr()
    assert avspeaker.main(["--out", str(demo), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "skipping training" in printed and "up to date" in printed
    assert json.loads((demo / "metrics.json").read_text())["results"] == before


def _bad_root(demo: Path, tmp_path: Path, edit) -> Path:
    root = tmp_path / "ava"
    shutil.copytree(demo / "data", root)
    csv_file = sorted((root / "ava_activespeaker_train_v1.0").glob("*.csv"))[0]
    edit(root, csv_file)
    return root


def _replace_field(csv_file: Path, index: int, value: str, line: int = 3) -> None:
    lines = csv_file.read_text().splitlines()
    fields = lines[line - 1].split(",")
    fields[index] = value
    lines[line - 1] = ",".join(fields)
    csv_file.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("case,message", [
    ("missing_video", "names video .* holds no"),
    ("box", r"row 3: face box .* must be normalized to \[0, 1\]"),
    ("label", "row 3: unknown label 'LAUGHING'"),
    ("undecodable", "cannot decode the video"),
])
def test_bad_input_one_error_line(demo, tmp_path, capsys, case, message):
    def edit(root: Path, csv_file: Path):
        vid = csv_file.name.split("-")[0]
        if case == "missing_video":
            (root / "videos" / f"{vid}.mp4").unlink()
        elif case == "box":
            _replace_field(csv_file, 4, "1.7")
        elif case == "label":
            _replace_field(csv_file, 6, "LAUGHING")
        else:
            (root / "videos" / f"{vid}.mp4").write_bytes(b"\x00garbage" * 500)

    root = _bad_root(demo, tmp_path, edit)
    out = tmp_path / "out"
    capsys.readouterr()
    assert avspeaker.main(["--ava", str(root), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(root) in err[0], err
    assert pytest.importorskip("re").search(message, err[0]), err[0]
    assert not (out / "metrics.json").exists() and not (out / "shards").exists()


def test_bad_config_before_data(tmp_path, capsys):
    assert avspeaker.main(["--out", str(tmp_path / "o"), "--variant", "lstm"]) == 2
    assert "unknown or repeated variants" in capsys.readouterr().err
    assert avspeaker.main(["--out", str(tmp_path / "o"), "--set", "window.segment_s=0.3"]) == 2
    assert "window_s / segment_s must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_shards_byte_identical_with_ray(demo, tmp_path):
    """Two builds of the same videos (the demo's corpus) through the one shard writer: identical tars."""
    import numpy as np

    from datasets.avspeaker.layout import Windowing, find_videos
    from datasets.avspeaker.roles import RoleRules
    from datasets.avspeaker.shards import Decoding, build_av_shards, rows_to_arrays
    from datasets.shards import read_shards, shard_paths

    w, d = Windowing(window_s=2.0), Decoding(frames_per_segment=2)
    videos = find_videos(demo / "data", "train")
    manifests = [build_av_shards(videos, tmp_path / name, split="train", w=w, d=d, rules=RoleRules(),
                                 samples_per_shard=4, log=lambda m: None) for name in ("a", "b")]
    assert manifests[0]["num_samples"] == 8 and len(manifests[0]["shards"]) == 2
    assert [s["sha256"] for s in manifests[0]["shards"]] == [s["sha256"] for s in manifests[1]["shards"]]
    rows = next(iter(read_shards(shard_paths(tmp_path / "a"), None).iter_batches(batch_size=8, batch_format="numpy")))
    a = rows_to_arrays(rows)
    assert a["faces"].shape == (8, 3, 4, 2, 32, 32) and a["mix"].dtype == np.int16
    assert all(m["has_main"] for m in a["meta"])
