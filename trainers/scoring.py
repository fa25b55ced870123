"""Score a trials file and score files from any toolkit: EER, minDCF and a DET plot, as the workflows do.

    python -m trainers.scoring SCORES [SCORES ...] [--trials TRIALS] [--out DIR]
                               [--p-target 0.01 --p-target 0.05] [--c-miss 1] [--c-fa 1]

Score files (one per system, Kaldi / WeSpeaker style), whitespace-separated, one trial a line:
  ``enroll test score``          labels then come from --trials
  ``enroll test score label``    label 1/0 or target/nontarget (WeSpeaker's ``scores`` files)
Trials file (--trials), either layout (its first line decides which):
  ``label enroll test``          VoxCeleb (``veri_test2.txt``): ``1 id10270/x6uY.../00001.wav id10270/...``
  ``enroll test target``         Kaldi ``trials``: last field ``target`` or ``nontarget`` (or 1/0)
With --trials, exactly its trials are scored, in its order (repeated lines count twice, as the list
says); every one needs a score, extra scored pairs are ignored (and counted). Without it the score
files must carry labels. Keys match exactly, or else with a file extension (``.wav``, ``.m4a``,
``.flac``, ``.jpg``, ...) removed on both sides: VoxCeleb lists name ``.wav`` files, this project's
keys have none.

Metrics are trainers.metrics' (WeSpeaker's definitions): EER by linear interpolation where
FNR - FPR changes sign, minDCF normalized by the best trivial system, the p_target values the
workflows report by default. Writes OUT/metrics.json, OUT/results.md and OUT/det.png (the minDCF
points marked); OUT defaults to ``<first score file>.scoring/``. Bad input (wrong number of fields,
a score that is not a finite number, a trial without a score, a single class) prints one
``error: FILE:LINE: ...`` line and exits with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

LABELS = {"1": 1, "0": 0, "target": 1, "nontarget": 0}
KEY_EXTENSIONS = (".wav", ".flac", ".m4a", ".mp3", ".ogg", ".sph", ".jpg", ".jpeg", ".png")


class ScoringError(ValueError):
    """Bad trials or score file; the message names the file (and line) and what is wrong."""


@dataclass
class ScoreFile:
    path: str
    scores: dict[tuple[str, str], float] = field(default_factory=dict)   # (enroll, test) -> score
    labels: dict[tuple[str, str], int] = field(default_factory=dict)     # only when the file has labels
    lines: dict[tuple[str, str], int] = field(default_factory=dict)      # line number of each pair


def _lines(path: str):
    """(line number, fields) of every non-blank line; a missing/unreadable file is a ScoringError."""
    try:
        f = open(path, encoding="utf-8-sig")  # tolerate a BOM
    except OSError as exc:
        raise ScoringError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if parts:
                yield n, parts


def _label(token: str, where: str) -> int:
    if token.lower() not in LABELS:
        raise ScoringError(f"{where}: label {token!r} is not 1/0 or target/nontarget")
    return LABELS[token.lower()]


def strip_key(key: str) -> str:
    """'id1/vid/00001.wav' -> 'id1/vid/00001' (only the known extensions listed in KEY_EXTENSIONS)."""
    stem, ext = os.path.splitext(key)
    return stem if ext.lower() in KEY_EXTENSIONS else key


def read_scores(path: str) -> ScoreFile:
    """Parse ``enroll test score [label]`` lines; every line must have the first line's field count."""
    out = ScoreFile(path)
    width = None
    for n, parts in _lines(path):
        where = f"{path}:{n}"
        if width is None:
            width = len(parts)
            if width not in (3, 4):
                raise ScoringError(f"{where}: expected 'enroll test score' or 'enroll test score label', "
                                   f"got {len(parts)} fields: {' '.join(parts)!r}")
        elif len(parts) != width:
            raise ScoringError(f"{where}: expected {width} fields like line 1 of the file, got {len(parts)}: "
                               f"{' '.join(parts)!r}")
        try:
            score = float(parts[2])
        except ValueError:
            raise ScoringError(f"{where}: score {parts[2]!r} is not a number") from None
        if score != score or score in (float("inf"), float("-inf")):
            raise ScoringError(f"{where}: score {parts[2]!r} is not a finite number")
        pair = (parts[0], parts[1])
        if pair in out.scores:
            if out.scores[pair] != score:
                raise ScoringError(f"{where}: trial {pair[0]} {pair[1]} scored again with a different score "
                                   f"(line {out.lines[pair]}); keep one line per trial")
            continue
        out.scores[pair], out.lines[pair] = score, n
        if width == 4:
            out.labels[pair] = _label(parts[3], where)
    if width is None:
        raise ScoringError(f"{path}: no trials (the file is empty)")
    return out


def _trials_layout(parts: list[str]) -> str | None:
    if parts[2].lower() in ("target", "nontarget"):
        return "kaldi"
    if parts[0] in ("0", "1"):
        return "voxceleb"
    return "kaldi" if parts[2] in ("0", "1") else None


def read_trials(path: str) -> list[tuple[int, str, str, int]]:
    """(label, enroll, test, line number) per line of a VoxCeleb or Kaldi trials file; the first line
    sets the layout, every other line must have it too."""
    trials, layout = [], None
    for n, parts in _lines(path):
        where = f"{path}:{n}"
        if len(parts) != 3:
            raise ScoringError(f"{where}: expected 3 fields ('1 enroll test' or 'enroll test target'), "
                               f"got {len(parts)}: {' '.join(parts)!r}")
        this = _trials_layout(parts)
        layout = layout or this
        if this is None or (this != layout and not (layout == "kaldi" and parts[2] in ("0", "1"))):
            want = "'<1|0> enroll test' (VoxCeleb, as line 1)" if layout == "voxceleb" else \
                "'enroll test <target|nontarget>' (Kaldi, as line 1)" if layout == "kaldi" else \
                "'<1|0> enroll test' (VoxCeleb) or 'enroll test <target|nontarget>' (Kaldi)"
            raise ScoringError(f"{where}: no label where expected: want {want}, got {' '.join(parts)!r}")
        if layout == "kaldi":
            trials.append((LABELS[parts[2].lower()], parts[0], parts[1], n))
        else:
            trials.append((int(parts[0]), parts[1], parts[2], n))
    if not trials:
        raise ScoringError(f"{path}: no trials (the file is empty)")
    return trials


def _lookup(sf: ScoreFile) -> dict[tuple[str, str], tuple[str, str]]:
    """Extension-stripped pair -> the file's own pair (ambiguous stripped pairs are left out)."""
    table: dict[tuple[str, str], tuple[str, str] | None] = {}
    for pair in sf.scores:
        key = (strip_key(pair[0]), strip_key(pair[1]))
        table[key] = None if key in table else pair
    return {k: v for k, v in table.items() if v is not None}


def _check_classes(labels, source: str) -> None:
    n_tgt = sum(labels)
    if n_tgt == 0 or n_tgt == len(labels):
        kind = "target" if n_tgt else "non-target"
        raise ScoringError(f"{source}: all {len(labels)} trials are {kind} trials: EER and minDCF need both "
                           "target and non-target trials")


def align(sf: ScoreFile, trials: list[tuple[int, str, str, int]] | None, trials_path: str | None):
    """(scores, labels, n_extra): the trials' scores in the trials' order (or the score file's own
    labelled trials), and how many scored pairs no trial asked for."""
    if trials is None:
        if not sf.labels:
            raise ScoringError(f"{sf.path}: lines have no label ('enroll test score'): pass --trials with the "
                               "trial list, or add a 4th field target/nontarget")
        pairs = list(sf.scores)
        labels = [sf.labels[p] for p in pairs]
        _check_classes(labels, sf.path)
        return [sf.scores[p] for p in pairs], labels, 0
    stripped = None
    scores, labels, used = [], [], set()
    for label, enroll, test, n in trials:
        pair = (enroll, test)
        if pair not in sf.scores:
            stripped = stripped if stripped is not None else _lookup(sf)
            pair = stripped.get((strip_key(enroll), strip_key(test)))
            if pair is None:
                raise ScoringError(f"{trials_path}:{n}: trial {enroll} {test} has no score in {sf.path}")
        if pair in sf.labels and sf.labels[pair] != label:
            raise ScoringError(f"{sf.path}:{sf.lines[pair]}: label {sf.labels[pair]} contradicts "
                               f"{trials_path}:{n} (label {label}) for trial {enroll} {test}")
        scores.append(sf.scores[pair])
        labels.append(label)
        used.add(pair)
    _check_classes(labels, trials_path)
    return scores, labels, len(sf.scores) - len(used)


def score(scores, labels, p_targets, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[dict, tuple]:
    """(metrics, (fnr, fpr)): EER, minDCF per p_target, and the thresholds where they are reached."""
    from trainers import metrics as M

    fnr, fpr, thr = M.compute_det(scores, labels)
    eer, i = M.compute_eer(fnr, fpr)
    out = {"eer": eer, "eer_threshold": float(thr[i])}
    for p in p_targets:
        value, j = M.min_dcf_point(fnr, fpr, p, c_miss, c_fa)
        out[f"min_dcf_{p:g}"] = value
        out[f"min_dcf_{p:g}_threshold"] = float(thr[j])
    out["n_trials"] = len(labels)
    out["n_target"] = int(sum(labels))
    return out, (fnr, fpr)


def results_markdown(results: dict, p_targets, trials_path: str | None) -> str:
    head = "| system | EER (%) | " + " | ".join(f"minDCF (p={p:g})" for p in p_targets)
    head += " | trials | target trials | scored, not in the trials |"
    lines = [f"Scores evaluated by `python -m trainers.scoring`; trials: {trials_path or 'labels in the score files'}.",
             "", head, "|---" * (head.count("|") - 1) + "|"]
    for name, r in results.items():
        m = r["metrics"]
        dcfs = " | ".join(f"{m[f'min_dcf_{p:g}']:.4f}" for p in p_targets)
        lines.append(f"| {name} | {100 * m['eer']:.3f} | {dcfs} | {m['n_trials']} | {m['n_target']} "
                     f"| {r['n_extra']} |")
    return "\n".join(lines) + "\n"


def _system_names(paths: list[str]) -> list[str]:
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else list(paths)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m trainers.scoring", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[4:]))
    ap.add_argument("scores", nargs="+", help="score file(s), one per system: 'enroll test score [label]'")
    ap.add_argument("--trials", help="trial list: '<1|0> enroll test' (VoxCeleb) or 'enroll test target|nontarget'")
    ap.add_argument("--out", help="output folder (default: <first score file>.scoring)")
    ap.add_argument("--p-target", type=float, action="append", dest="p_targets",
                    help="prior of a target trial for minDCF; repeat for several (default 0.01 and 0.05)")
    ap.add_argument("--c-miss", type=float, default=1.0)
    ap.add_argument("--c-fa", type=float, default=1.0)
    ap.add_argument("--title", default=None, help="DET plot title")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from datasets.atomic import write_json, write_text
    from trainers.metrics import P_TARGETS

    p_targets = args.p_targets or list(P_TARGETS)
    for p in p_targets:
        if not 0.0 < p < 1.0:
            raise ScoringError(f"--p-target {p:g}: must be strictly between 0 and 1")
    if args.c_miss <= 0 or args.c_fa <= 0:
        raise ScoringError(f"--c-miss/--c-fa must be positive, got {args.c_miss:g} / {args.c_fa:g}")
    trials = read_trials(args.trials) if args.trials else None
    results, curves = {}, {}
    for name, path in zip(_system_names(args.scores), args.scores):
        sf = read_scores(path)
        scores, labels, n_extra = align(sf, trials, args.trials)
        metrics, curves[name] = score(scores, labels, p_targets, args.c_miss, args.c_fa)
        results[name] = {"scores": os.path.abspath(path), "metrics": metrics, "n_extra": n_extra}

    out = Path(args.out or f"{args.scores[0]}.scoring")
    from trainers.plots import plot_det  # matplotlib: only once the input is known to be good

    det = plot_det(curves, out / "det.png", title=args.title or "DET curve", p_targets=p_targets,
                   c_miss=args.c_miss, c_fa=args.c_fa)
    summary = {"trials": os.path.abspath(args.trials) if args.trials else None, "p_targets": p_targets,
               "c_miss": args.c_miss, "c_fa": args.c_fa, "systems": results}
    write_json(out / "metrics.json", summary)
    write_text(out / "results.md", results_markdown(results, p_targets, args.trials))
    for name, r in results.items():
        m = r["metrics"]
        dcfs = "  ".join(f"minDCF(p={p:g}) {m[f'min_dcf_{p:g}']:.4f}" for p in p_targets)
        print(f"{name}: EER {100 * m['eer']:.3f}%  {dcfs}  ({m['n_trials']} trials, {m['n_target']} target)")
    print(f"results: {out / 'results.md'}, {out / 'metrics.json'}, {det}")
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output folder cannot be written
        print(f"error: {exc.filename or args.out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
