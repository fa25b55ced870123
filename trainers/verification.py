"""Verification evaluation shared by the speaker and face tasks: embed every system's test items
once, score each trial list by cosine, and report the same metrics under the same keys.

Per list and system: EER and minDCF (p_target 0.01, 0.05) as WeSpeaker defines them, and for
lists with folds (LFW's pairs.txt) the cross-validated accuracy of the face papers (threshold
chosen on the other folds); all from trainers.metrics.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from trainers import metrics as M


@dataclasses.dataclass
class TrialList:
    name: str                        # e.g. veri_test2, pairs.txt
    enroll: Sequence[str]            # keys of the embeddings
    test: Sequence[str]
    labels: np.ndarray               # 1 = same identity
    folds: Sequence[int] | None = None   # per trial: its cross-validation fold (LFW); None: no accuracy


def evaluate(systems: dict[str, dict | None], embed: Callable[[dict | None], dict[str, np.ndarray]],
             lists: Sequence[TrialList]) -> tuple[dict, dict]:
    """Embed the test items once per system (`embed(encoder_state)` -> {key: embedding}) and score
    every list by cosine. Returns ({list: {system: metrics}}, {"<list> <system>": (fnr, fpr)})."""
    results: dict = {lst.name: {} for lst in lists}
    curves = {}
    for system, state in systems.items():
        embeddings = embed(state)
        for lst in lists:
            scores = M.cosine_scores(embeddings, (list(lst.enroll), list(lst.test)))
            metrics = M.verification_metrics(scores, lst.labels)
            if lst.folds is not None:
                folds = M.verification_accuracy_10fold(scores, lst.labels, lst.folds)
                metrics.update(mean_acc=folds["mean_acc"], std_acc=folds["std_acc"], fold_acc=folds["fold_acc"],
                               thresholds=folds["thresholds"], n_folds=len(folds["fold_acc"]))
            results[lst.name][system] = metrics
            fnr, fpr, _ = M.compute_det(scores, lst.labels)
            curves[f"{lst.name} {system}"] = (fnr, fpr)
    return results, curves


def results_table(results: dict) -> str:
    """Markdown: one row per (list, system); accuracy columns where a list has folds."""
    folds = any("mean_acc" in m for systems in results.values() for m in systems.values())
    head = "| trial list | system | EER (%) | minDCF (p=0.01) | minDCF (p=0.05) |"
    head += " accuracy (%) | std (%) | folds |" if folds else ""
    lines = [head + " trials |", "|---" * (head.count("|")) + "|"]
    for name, systems in results.items():
        for system, m in systems.items():
            row = f"| {name} | {system} | {100 * m['eer']:.2f} | {m['min_dcf_0.01']:.3f} | {m['min_dcf_0.05']:.3f} |"
            if folds:
                row += (f" {100 * m['mean_acc']:.2f} | {100 * m['std_acc']:.2f} | {m['n_folds']} |" if "mean_acc" in m
                        else " — | — | — |")
            lines.append(row + f" {m['n_trials']} |")
    return "\n".join(lines)
