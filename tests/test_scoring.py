"""`python -m trainers.scoring`: trials + score files from any toolkit -> EER / minDCF / DET, hand-computed
cases in every accepted layout, and one `error: FILE:LINE` line with exit code 2 for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.scoring import main

ROOT = Path(__file__).resolve().parents[1]

# Four targets, four non-targets; sorted: 0.1n 0.2n 0.3t 0.4n 0.6t 0.7n 0.8t 0.9t. Accept if score >= t:
#   t     0.1  0.2  0.3  0.4  0.6  0.7  0.8  0.9  inf
#   FNR   0    0    0    1/4  1/4  1/2  1/2  3/4  1
#   FPR   1    3/4  1/2  1/2  1/4  1/4  0    0    0
# FNR - FPR first >= 0 at t = 0.6, exactly 0: EER = 1/4, threshold 0.6.
# DCF(0.01) = .01 FNR + .99 FPR, smallest .005 at t = 0.8 -> / .01 = 0.5; DCF(0.05): .025 at 0.8 -> 0.5.
# DCF(0.5) = (FNR + FPR) / 2: smallest .25 first at t = 0.3 -> / .5 = 0.5.
TRIALS = [  # (label, enroll, test, score)
    (1, "id1/a/00001", "id1/b/00002", 0.9), (0, "id1/a/00001", "id2/c/00001", 0.1),
    (1, "id2/c/00001", "id2/d/00003", 0.8), (0, "id2/c/00001", "id3/e/00001", 0.2),
    (1, "id3/e/00001", "id3/f/00002", 0.3), (0, "id3/e/00001", "id1/b/00002", 0.7),
    (1, "id4/g/00001", "id4/h/00001", 0.6), (0, "id4/g/00001", "id2/d/00003", 0.4),
]
NAMES = {1: "target", 0: "nontarget"}


def write(path: Path, lines) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def voxceleb_trials(tmp_path) -> str:  # veri_test2.txt: label first, paths with .wav
    return write(tmp_path / "veri_test2.txt", [f"{y} {e}.wav {t}.wav" for y, e, t, _ in TRIALS])


def check_hand_case(out: Path, n_extra=0, name="scores"):
    m = json.loads((out / "metrics.json").read_text())["systems"][name]
    assert m["n_extra"] == n_extra
    m = m["metrics"]
    assert (m["eer"], m["eer_threshold"]) == (0.25, 0.6)
    assert m["min_dcf_0.01"] == pytest.approx(0.5, abs=1e-12) and m["min_dcf_0.01_threshold"] == 0.8
    assert m["min_dcf_0.05"] == pytest.approx(0.5, abs=1e-12) and m["min_dcf_0.05_threshold"] == 0.8
    assert (m["n_trials"], m["n_target"]) == (8, 4)
    assert (out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    row = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith(f"| {name} "))
    assert row.split("|")[2:5] == [" 25.000 ", " 0.5000 ", " 0.5000 "]


def test_module_voxceleb_trials_with_scores_without_extension(tmp_path):
    # The score file uses this project's keys (no .wav), another order, and one pair no trial asks for.
    trials = voxceleb_trials(tmp_path)
    scores = write(tmp_path / "scores.txt", [f"{e} {t} {s}" for _, e, t, s in reversed(TRIALS)]
                   + ["id9/z/00001 id9/z/00002 0.55"])
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "trainers.scoring", scores, "--trials", trials, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "scores: EER 25.000%" in proc.stdout
    check_hand_case(out, n_extra=1)


def test_kaldi_trials_and_default_out(tmp_path):
    trials = write(tmp_path / "trials", [f"{e} {t} {NAMES[y]}" for y, e, t, _ in TRIALS])
    scores = write(tmp_path / "scores", [f"{e} {t} {s:.1e}" for _, e, t, s in TRIALS])  # 9.0e-01 is a number too
    assert main([scores, "--trials", trials]) == 0
    check_hand_case(tmp_path / "scores.scoring")


def test_labelled_score_file_and_extra_p_target(tmp_path):
    # WeSpeaker's score files: `enroll test score target|nontarget`, no trials file needed.
    scores = write(tmp_path / "scores.txt", [f"{e} {t} {s} {NAMES[y]}" for y, e, t, s in TRIALS])
    assert main([scores, "--out", str(tmp_path / "o"), "--p-target", "0.5"]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["p_targets"] == [0.5]
    got = m["systems"]["scores"]["metrics"]
    assert got["eer"] == 0.25 and got["min_dcf_0.5"] == 0.5 and got["min_dcf_0.5_threshold"] == 0.3


def test_interpolated_eer_two_systems(tmp_path):
    # non 0.2, 0.5, 0.7; tgt 0.5, 0.9 (a target/non-target tie). Points (FNR, FPR) at t = 0.2, 0.5, 0.7,
    # 0.9, inf: (0,1) (0,2/3) (1/2,1/3) (1/2,0) (1,0); d = FNR-FPR crosses between 0.5 (-2/3) and 0.7 (+1/6):
    # a = (1/6)/(5/6) = 1/5, EER = 1/2 + 1/5 * (0 - 1/2) = 2/5. The second system (the hand case's
    # scores) gets its own row and curve.
    pairs = [(0, "u1", "u2", 0.2), (0, "u1", "u3", 0.5), (0, "u2", "u3", 0.7), (1, "u1", "u4", 0.5),
             (1, "u2", "u5", 0.9)]
    trials = write(tmp_path / "list.txt", [f"{y} {e} {t}" for y, e, t, _ in pairs])
    a = write(tmp_path / "sysA.txt", [f"{e} {t} {s}" for _, e, t, s in pairs])
    b = write(tmp_path / "sysB.txt", [f"{e} {t} {s}" for (_, e, t, _), (*_, s) in zip(pairs, TRIALS[1:6])])
    assert main([a, b, "--trials", trials, "--out", str(tmp_path / "o")]) == 0
    systems = json.loads((tmp_path / "o" / "metrics.json").read_text())["systems"]
    assert systems["sysA"]["metrics"]["eer"] == pytest.approx(0.4, abs=1e-15)
    # sysB: labels 0 0 0 1 1, scores 0.1 0.8 0.2 0.3 0.7: non 0.1 0.2 0.8, tgt 0.3 0.7. At t = 0.3:
    # FNR 0, FPR 1/3; at t = 0.7: FNR 1/2, FPR 1/3 -> d = +1/6 first, previous -1/3: a = (1/6)/(1/2) = 1/3,
    # EER = 1/2 + 1/3 * (0 - 1/2) = 1/3.
    assert systems["sysB"]["metrics"]["eer"] == pytest.approx(1 / 3, abs=1e-15)
    md = (tmp_path / "o" / "results.md").read_text()
    assert "| sysA | 40.000 |" in md and "| sysB | 33.333 |" in md


@pytest.mark.parametrize("case,where,words", [
    ("scores_fields", "scores.txt:3", "expected 3 fields"),
    ("scores_first_line_fields", "scores.txt:1", "got 2 fields"),
    ("score_not_number", "scores.txt:2", "not a number"),
    ("score_nan", "scores.txt:4", "not a finite number"),
    ("missing_score", "veri_test2.txt:5", "has no score"),
    ("one_class", "veri_test2.txt", "all 4 trials are target"),
    ("trials_fields", "veri_test2.txt:2", "expected 3 fields"),
    ("trials_layout", "veri_test2.txt:3", "no label"),
    ("contradiction", "scores.txt:1", "contradicts"),
    ("no_labels", "scores.txt", "no label"),
    ("missing_file", "nope.txt", "cannot read"),
])
def test_bad_input_one_error_line_exit_2(tmp_path, capsys, case, where, words):
    lines = [f"{e}.wav {t}.wav {s}" for _, e, t, s in TRIALS]
    trials = [f"{y} {e}.wav {t}.wav" for y, e, t, _ in TRIALS]
    args = ["--trials", str(tmp_path / "veri_test2.txt")]
    if case == "scores_fields":
        lines[2] = lines[2] + " target extra"
    elif case == "scores_first_line_fields":
        lines[0] = "id1/a/00001 0.9"
    elif case == "score_not_number":
        lines[1] = lines[1].replace("0.1", "0,1")
    elif case == "score_nan":
        lines[3] = lines[3].replace("0.2", "nan")
    elif case == "missing_score":
        del lines[4]
    elif case == "one_class":
        trials = [t for t in trials if t.startswith("1 ")]
    elif case == "trials_fields":
        trials[1] = trials[1] + " x"
    elif case == "trials_layout":
        trials[2] = " ".join(trials[2].split()[1:] + ["1"])   # a Kaldi-style line in a VoxCeleb list
    elif case == "contradiction":
        lines = [f"{line} {'nontarget' if i == 0 else NAMES[TRIALS[i][0]]}" for i, line in enumerate(lines)]
    elif case == "no_labels":
        args = []
    elif case == "missing_file":
        args = ["--trials", str(tmp_path / "nope.txt")]
    write(tmp_path / "veri_test2.txt", trials)
    scores = write(tmp_path / "scores.txt", lines)
    capsys.readouterr()
    assert main([scores, *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert f"{where}:" in err[0] and words in err[0], err[0]
    assert not (tmp_path / "o").exists()   # nothing written for bad input
