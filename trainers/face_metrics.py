"""Face verification accuracy under the standard LFW 10-fold protocol (View 2).

For each fold k: the threshold is chosen to maximize pair accuracy on the other folds, then the
accuracy of that threshold on fold k is recorded; the result is the mean and (population, as
SphereFace's evaluation) standard deviation of the per-fold accuracies. A pair is accepted as
"same" when score >= threshold, as in `trainers.metrics`.

Candidate thresholds: every midpoint between consecutive distinct training scores, plus -inf
(accept all) and +inf (reject all); that covers every distinct split of the training scores
(a grid of thresholds, as some implementations use, only approximates it). Ties in training
accuracy go to the lowest threshold. The EER is computed over all pairs pooled
(`trainers.metrics.eer`).
"""
from __future__ import annotations

import numpy as np

from trainers.metrics import _check_trials, eer


def best_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy): the lowest threshold maximizing accuracy of `score >= threshold`."""
    s, y = _check_trials(scores, labels, both_classes=False)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    below = np.r_[starts, s.size]  # trials below candidate j: those with the first j distinct values
    tgt_below = np.r_[0, np.cumsum(y, dtype=np.int64)][below]
    correct = (int(y.sum()) - tgt_below) + (below - tgt_below)  # targets accepted + non-targets rejected
    j = int(np.argmax(correct))
    values = s[starts]
    if j == 0:
        t = -np.inf
    elif j == values.size:
        t = np.inf
    else:
        t = float((values[j - 1] + values[j]) / 2)
    return t, float(correct[j] / s.size)


def verification_accuracy_10fold(scores, labels, folds) -> dict:
    """{'mean_acc', 'std_acc', 'eer', 'fold_acc', 'thresholds'}; accuracies and eer are fractions.

    `folds` gives each pair's fold (any hashable ints, e.g. FacePair.fold); at least 2 folds.
    """
    s, y = _check_trials(scores, labels)  # both classes needed for the pooled EER
    f = np.asarray(folds).ravel()
    if f.size != s.size:
        raise ValueError(f"length mismatch: {s.size} scores but {f.size} fold ids")
    fold_ids = np.unique(f)
    if fold_ids.size < 2:
        raise ValueError(f"need at least 2 folds for cross-validated accuracy, got {fold_ids.size}")
    accs, thresholds = [], []
    for k in fold_ids:
        test = f == k
        t, _ = best_threshold(s[~test], y[~test])
        accs.append(float(np.mean((s[test] >= t) == (y[test] == 1))))
        thresholds.append(t)
    accs_arr = np.asarray(accs)
    return {"mean_acc": float(accs_arr.mean()), "std_acc": float(accs_arr.std()), "eer": eer(s, y),
            "fold_acc": accs, "thresholds": thresholds}
