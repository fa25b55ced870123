"""Verification metrics (EER, normalized minDCF), cosine trial scoring and accuracy.

The one place for these numbers, so that every workflow reports the same definitions. Semantics
follow WeSpeaker's ``wespeaker/utils/score_metrics.py``:

* EER as ``compute_eer``: take the first operating point where FNR - FPR >= 0 and the one before
  it, and interpolate linearly to where FNR - FPR = 0.
* minDCF as ``compute_c_norm``: min over operating points of
  ``c_miss * FNR * p_target + c_fa * FPR * (1 - p_target)``, divided by
  ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the cost of the best trivial system).

Operating points (``compute_det``): a trial is *accepted* when ``score >= threshold``. Thresholds
are the distinct scores in ascending order, then ``+inf``:

    FNR(t) = #{targets with score <  t} / #targets
    FPR(t) = #{non-targets with score >= t} / #non-targets

So the first point is accept-all (FNR 0, FPR 1) and the last is reject-all (FNR 1, FPR 0), and
FNR - FPR is non-decreasing from -1 to +1: the EER crossing always exists and is unique.

Ties: trials with equal scores always fall on the same side of every threshold. WeSpeaker sorts
with ``argsort`` and makes one point per *trial*, so tied targets/non-targets there are split in
whatever order the sort left them. With no ties both give the same EER and minDCF (WeSpeaker's
points are ours minus the accept-all point, which never sets the EER and costs
``c_fa * (1 - p_target)``, never the minimum for p_target <= 0.5).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

P_TARGETS = (0.01, 0.05)


class MissingEmbeddingError(ValueError, KeyError):
    """A trial names a key with no embedding; catchable as ValueError or KeyError."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _check_trials(scores, labels, both_classes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (float64 scores, int8 labels in {0, 1}); `both_classes=False` allows trials
    of one class only (accuracy is still defined, error rates are not)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    raw = np.asarray(labels).ravel()
    if s.size == 0:
        raise ValueError("no trials: scores is empty")
    if s.size != raw.size:
        raise ValueError(f"length mismatch: {s.size} scores but {raw.size} labels")
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} scores are NaN")
    if not np.isfinite(s).all():
        # +inf would sit on the reject-all threshold and break FNR(+inf) = 1.
        raise ValueError(f"{int(np.isinf(s).sum())} scores are infinite")
    bad = ~((raw == 0) | (raw == 1))
    if bad.any():
        raise ValueError(f"labels must be 0/1 (or bool); found e.g. {raw[bad][0]!r}")
    y = (raw == 1).astype(np.int8)
    n_tgt = int(y.sum())
    if not both_classes:
        return s, y
    if n_tgt == 0:
        raise ValueError("no target trials (label 1): FNR is undefined")
    if n_tgt == y.size:
        raise ValueError("no non-target trials (label 0): FPR is undefined")
    return s, y


def _counts_below(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, below, tgt_below) for checked trials: the distinct scores ascending; then, per
    threshold in values + [+inf], the number of trials and of targets strictly below it.

    Ties need only counts, not an order of the trials, so this sorts score *values* (numpy's
    vectorized sort; no argsort, no gather) and places the smaller class on them: each of its scores
    is one of the values, so ``searchsorted`` finds its exact slot and a cumulative bincount gives
    that class below every threshold; the other class is the rest. About 3x faster than one stable
    argsort of (score, label) on 1M trials, with the same integers.
    """
    ordered = np.sort(s)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    values = ordered[starts]
    below = np.r_[starts, s.size]  # starts[j] = trials below the j-th distinct value
    tgt = y == 1
    n_tgt = int(np.count_nonzero(tgt))
    few_is_tgt = 2 * n_tgt <= s.size
    slots = np.searchsorted(values, np.sort(s[tgt if few_is_tgt else ~tgt]))
    few_below = np.r_[0, np.cumsum(np.bincount(slots, minlength=values.size), dtype=np.int64)]
    tgt_below = few_below if few_is_tgt else below - few_below
    return values, below, tgt_below


def compute_det(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fnr, fpr, thresholds) at every distinct score plus +inf; see the module doc.

    O(n log n): sorts of the score values and counts (``_counts_below``). FNR rises, FPR falls
    along the arrays. Both are exact integer counts divided once, so FPR equals scikit-learn's
    ``roc_curve(..., drop_intermediate=False)`` FPR bit for bit (reversed) and FNR its ``1 - TPR``
    to within one rounding.
    """
    s, y = _check_trials(scores, labels)
    values, below, tgt_below = _counts_below(s, y)
    n_tgt = int(tgt_below[-1])
    n_non = s.size - n_tgt
    fnr = tgt_below / n_tgt
    fpr = (n_non - (below - tgt_below)) / n_non  # integer numerator: exact 0 and 1 at the ends
    return fnr, fpr, np.r_[values, np.inf]


def _check_curve(fnr, fpr) -> tuple[np.ndarray, np.ndarray]:
    fnr = np.asarray(fnr, dtype=np.float64).ravel()
    fpr = np.asarray(fpr, dtype=np.float64).ravel()
    if fnr.size == 0 or fnr.size != fpr.size:
        raise ValueError(f"fnr/fpr must be non-empty and equal length ({fnr.size} vs {fpr.size})")
    if np.isnan(fnr).any() or np.isnan(fpr).any():
        raise ValueError("fnr/fpr contain NaN")
    return fnr, fpr


def compute_eer(fnr, fpr) -> tuple[float, int]:
    """(eer, index) as WeSpeaker: index x1 is the first point with d = fnr - fpr >= 0, x2 = x1 - 1.

    With d1 = d[x1] >= 0 > d2 = d[x2], the line between the two points crosses d = 0 at
    a = d1 / (d1 - d2) of the way from x1 to x2, and eer = fnr[x1] + a * (fnr[x2] - fnr[x1])
    (equal to fpr there). An exact zero at x1 gives a = 0, eer = fnr[x1]. ``thresholds[index]``
    from ``compute_det`` is then the lowest threshold with FNR >= FPR.
    """
    fnr, fpr = _check_curve(fnr, fpr)
    d = fnr - fpr
    nonneg = np.flatnonzero(d >= 0)
    if nonneg.size == 0:
        raise ValueError("FNR - FPR never reaches 0: not a complete DET curve")
    x1 = int(nonneg[0])
    if x1 == 0:
        if d[0] != 0:
            raise ValueError("FNR - FPR starts positive: not a complete DET curve")
        return float(fnr[0]), 0
    x2 = x1 - 1
    a = d[x1] / (d[x1] - d[x2])
    return float(fnr[x1] + a * (fnr[x2] - fnr[x1])), x1


def min_dcf_point(fnr, fpr, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, int]:
    """(normalized minDCF, index of the first operating point reaching it); see ``min_dcf``."""
    fnr, fpr = _check_curve(fnr, fpr)
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    dcf = c_miss * fnr * p_target + c_fa * fpr * (1.0 - p_target)
    i = int(np.argmin(dcf))
    return float(dcf[i] / min(c_miss * p_target, c_fa * (1.0 - p_target))), i


def min_dcf(fnr, fpr, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalized minimum detection cost (WeSpeaker compute_c_norm); see the module doc."""
    return min_dcf_point(fnr, fpr, p_target, c_miss, c_fa)[0]


def eer(scores, labels) -> float:
    """EER as a fraction (0.05 = 5 %)."""
    return compute_eer(*compute_det(scores, labels)[:2])[0]


def verification_metrics(scores, labels) -> dict:
    """{'eer', 'min_dcf_0.01', 'min_dcf_0.05', 'n_trials', 'n_target'}; eer is a fraction."""
    fnr, fpr, _ = compute_det(scores, labels)
    out = {"eer": compute_eer(fnr, fpr)[0]}
    for p in P_TARGETS:
        out[f"min_dcf_{p}"] = min_dcf(fnr, fpr, p)
    labels = np.asarray(labels).ravel()
    out["n_trials"] = int(labels.size)
    out["n_target"] = int((labels == 1).sum())
    return out


def _embedding_table(embeddings) -> tuple[np.ndarray, Mapping]:
    """(matrix, key -> row) from a dict of vectors or a (matrix, index) pair."""
    if isinstance(embeddings, Mapping):
        keys = list(embeddings)
        if not keys:
            raise ValueError("no embeddings")
        rows = [np.asarray(embeddings[k], dtype=np.float64).ravel() for k in keys]
        dims = {r.size for r in rows}
        if len(dims) != 1:
            raise ValueError(f"embeddings have different sizes: {sorted(dims)}")
        return np.stack(rows), {k: i for i, k in enumerate(keys)}
    matrix, index = embeddings
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"embedding matrix must be 2-D, got shape {matrix.shape}")
    if not isinstance(index, Mapping):  # a sequence of keys, one per row
        index = {k: i for i, k in enumerate(index)}
    if len(index) and max(index.values()) >= matrix.shape[0]:
        raise ValueError("index points past the end of the embedding matrix")
    return matrix, index


def _rows(index: Mapping, keys) -> np.ndarray:
    try:
        return np.fromiter((index[k] for k in keys), dtype=np.int64)
    except KeyError as e:
        raise MissingEmbeddingError(f"no embedding for trial key {e.args[0]!r}") from None


def cosine_scores(embeddings, trials) -> np.ndarray:
    """Cosine similarity per trial pair.

    embeddings: ``{key: vector}`` or ``(matrix, index)`` with index ``{key: row}`` or a sequence of
    keys (one per row). trials: ``(left_keys, right_keys)`` of equal length, or an (n, 2) array
    of keys. Rows are L2-normalized once, then gathered and dotted row-wise.
    """
    matrix, index = _embedding_table(embeddings)
    if isinstance(trials, np.ndarray) and trials.ndim == 2 and trials.shape[1] == 2:
        left, right = trials[:, 0], trials[:, 1]
    else:
        if len(trials) != 2:
            raise ValueError("trials must be (left_keys, right_keys) or an (n, 2) array")
        left, right = trials
    if len(left) != len(right):
        raise ValueError(f"trial sides differ in length: {len(left)} vs {len(right)}")
    li, ri = _rows(index, left), _rows(index, right)
    norms = np.linalg.norm(matrix, axis=1)
    used = np.unique(np.r_[li, ri])
    zero = used[norms[used] == 0]
    if zero.size:
        inverse = {v: k for k, v in index.items()}
        raise ValueError(f"zero-norm embedding for key {inverse.get(int(zero[0]))!r}")
    unit = matrix / np.where(norms == 0, 1.0, norms)[:, None]
    return np.einsum("ij,ij->i", unit[li], unit[ri])


def accuracy(pred, target) -> float:
    """Fraction of correct predictions; pred is class ids (n,) or scores/logits (n, C) -> argmax."""
    p = np.asarray(pred)
    t = np.asarray(target).ravel()
    if p.ndim == 2:
        p = p.argmax(axis=1)
    p = p.ravel()
    if t.size == 0:
        raise ValueError("no targets: accuracy is undefined")
    if p.size != t.size:
        raise ValueError(f"length mismatch: {p.size} predictions but {t.size} targets")
    return float((p == t).mean())


# ----------------------------------------------------------------------------- k-fold accuracy (LFW)
# Face verification accuracy under the standard LFW 10-fold protocol (View 2).
#
# For each fold k: the threshold is chosen to maximize pair accuracy on the other folds, then the
# accuracy of that threshold on fold k is recorded; the result is the mean and (population, as
# SphereFace's evaluation) standard deviation of the per-fold accuracies. A pair is accepted as
# "same" when score >= threshold, as in `trainers.metrics`.
#
# Candidate thresholds: every midpoint between consecutive distinct training scores, plus -inf
# (accept all) and +inf (reject all); that covers every distinct split of the training scores
# (a grid of thresholds, as some implementations use, only approximates it). Ties in training
# accuracy go to the lowest threshold. The EER is computed over all pairs pooled.


def best_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy): the lowest threshold maximizing accuracy of `score >= threshold`."""
    s, y = _check_trials(scores, labels, both_classes=False)
    # Candidate j rejects the trials with the first j distinct values.
    values, below, tgt_below = _counts_below(s, y)
    correct = (int(tgt_below[-1]) - tgt_below) + (below - tgt_below)  # targets accepted + non-targets rejected
    j = int(np.argmax(correct))
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
