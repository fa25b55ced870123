"""trainers.metrics / trainers.plots: hand-computed cases, a brute-force reference, errors, PNGs."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from trainers.metrics import (
    MissingEmbeddingError,
    accuracy,
    compute_det,
    compute_eer,
    cosine_scores,
    eer,
    min_dcf,
    min_dcf_point,
    verification_metrics,
)
from trainers.plots import plot_det, plot_training_curves, training_figure
from trainers.verification import results_table

# ---------------------------------------------------------------- hand-computed cases


def test_hand_case_exact_crossing():
    # Sorted: 0.1 non, 0.35 tgt, 0.4 non, 0.8 tgt; accept if score >= t.
    #   t     FNR  FPR   FNR-FPR
    #   0.1   0    1     -1
    #   0.35  0    1/2   -1/2
    #   0.4   1/2  1/2    0     <- first d >= 0, exact zero: EER = 1/2, index 2
    #   0.8   1/2  0     +1/2
    #   inf   1    0     +1
    # DCF(p) = p*FNR + (1-p)*FPR, min at t=0.8: p/2; normalized by min(p, 1-p) = p -> 0.5.
    fnr, fpr, thr = compute_det([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    np.testing.assert_array_equal(fnr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(fpr, [1, 0.5, 0.5, 0, 0])
    np.testing.assert_array_equal(thr, [0.1, 0.35, 0.4, 0.8, np.inf])
    e, i = compute_eer(fnr, fpr)
    assert (e, i, thr[i]) == (0.5, 2, 0.4)
    assert min_dcf(fnr, fpr, 0.01) == pytest.approx(0.5)
    assert min_dcf(fnr, fpr, 0.05) == pytest.approx(0.5)
    m = verification_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert m == pytest.approx({"eer": 0.5, "min_dcf_0.01": 0.5, "min_dcf_0.05": 0.5,
                               "n_trials": 4, "n_target": 2})


def test_min_dcf_point_is_the_first_minimum():
    # The hand case above: DCF(0.01) = .01 FNR + .99 FPR over the points = .99, .495, .5, .005, .01: the
    # minimum .005 sits at index 3 (t = 0.8). DCF(0.5) = (FNR + FPR)/2 = .5, .25, .5, .25, .5: the first of
    # the two minima (index 1) is reported; normalized by min(p, 1-p) = .5 -> 0.5.
    fnr, fpr, thr = compute_det([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert min_dcf_point(fnr, fpr, 0.01) == (pytest.approx(0.5), 3) and thr[3] == 0.8
    assert min_dcf_point(fnr, fpr, 0.5) == (0.5, 1)
    # c_miss = 10: DCF = 10*.01 FNR + .99 FPR = .99, .495, .545, .05, .1 -> .05 / min(.1, .99) = 0.5 at index 3.
    assert min_dcf_point(fnr, fpr, 0.01, c_miss=10.0) == (pytest.approx(0.5), 3)


def test_results_table_column_names_are_unique():
    m = {"eer": 0.1, "min_dcf_0.01": 0.5, "min_dcf_0.05": 0.3, "n_trials": 40}
    for results in ({"veri_test2": {"trained": m}},
                    {"pairs.txt": {"trained": {**m, "mean_acc": 0.9, "std_acc": 0.01, "n_folds": 10}}}):
        lines = results_table(results).splitlines()
        cols = [c.strip() for c in lines[0].strip("|").split("|")]
        assert len(cols) == len(set(cols)), cols
        assert len(lines[2].strip("|").split("|")) == len(cols)


def test_perfect_separation():
    # t=0.8 accepts both targets and no non-target: FNR = FPR = 0.
    m = verification_metrics([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert m["eer"] == 0.0 and m["min_dcf_0.01"] == 0.0 and m["min_dcf_0.05"] == 0.0


def test_fully_inverted():
    # All targets below all non-targets: points (0,1) (1/2,1) (1,1) (1,1/2) (1,0); FNR = FPR only
    # at (1,1), so EER = 1. Best DCF is reject-all: p * 1 / p = 1.
    m = verification_metrics([0.8, 0.9, 0.1, 0.2], [0, 0, 1, 1])
    assert m["eer"] == 1.0 and m["min_dcf_0.01"] == 1.0 and m["min_dcf_0.05"] == 1.0


def test_interpolated_crossing_with_tie():
    # non 0.2, 0.5, 0.7; tgt 0.5, 0.9 (a tie at 0.5: both sides of every threshold together).
    #   t    FNR  FPR  d = FNR-FPR
    #   0.2  0    1    -1
    #   0.5  0    2/3  -2/3      <- x2
    #   0.7  1/2  1/3  +1/6      <- x1 (first d >= 0)
    #   0.9  1/2  0    +1/2
    #   inf  1    0    +1
    # a = d1/(d1-d2) = (1/6)/(5/6) = 1/5; EER = 1/2 + 1/5*(0 - 1/2) = 2/5
    # (and FPR there: 1/3 + 1/5*(2/3 - 1/3) = 2/5, the same, as it must be).
    scores, labels = [0.2, 0.5, 0.7, 0.5, 0.9], [0, 0, 0, 1, 1]
    fnr, fpr, _ = compute_det(scores, labels)
    e, i = compute_eer(fnr, fpr)
    assert i == 2 and e == pytest.approx(0.4, abs=1e-15)
    assert eer(scores, labels) == pytest.approx(0.4, abs=1e-15)


def test_tie_order_does_not_matter():
    scores = np.array([0.5, 0.5, 0.5, 0.1, 0.9])
    labels = np.array([1, 0, 1, 0, 1])
    perm = [2, 4, 1, 0, 3]
    assert verification_metrics(scores, labels) == verification_metrics(scores[perm], labels[perm])


def test_bool_and_float_labels():
    s = [0.1, 0.4, 0.35, 0.8]
    ref = verification_metrics(s, [0, 0, 1, 1])
    assert verification_metrics(s, [False, False, True, True]) == ref
    assert verification_metrics(s, [0.0, 0.0, 1.0, 1.0]) == ref


# ---------------------------------------------------------------- brute-force reference


def _reference(scores, labels):
    """Plain python, O(n * thresholds): accept if s >= t for t in distinct scores, then +inf."""
    scores, labels = [float(s) for s in scores], [int(v) for v in labels]
    n_tgt = sum(labels)
    n_non = len(labels) - n_tgt
    points = []
    for t in sorted(set(scores)) + [math.inf]:
        miss = sum(1 for s, y in zip(scores, labels) if y == 1 and s < t)
        fa = sum(1 for s, y in zip(scores, labels) if y == 0 and s >= t)
        points.append((miss / n_tgt, fa / n_non))
    for k, (fn, fp) in enumerate(points):
        if fn - fp >= 0:
            fn0, fp0 = points[k - 1]
            a = (fn - fp) / ((fn - fp) - (fn0 - fp0))
            e = fn + a * (fn0 - fn)
            break
    out = {"eer": e, "n_trials": len(labels), "n_target": n_tgt}
    for p in (0.01, 0.05):
        out[f"min_dcf_{p}"] = min(p * fn + (1 - p) * fp for fn, fp in points) / min(p, 1 - p)
    return out


@pytest.mark.parametrize("seed,decimals,target_fraction", [
    (0, None, 0.1), (1, None, 0.5), (2, 1, 0.1), (3, 0, 0.3), (4, 2, 0.02),
])
def test_matches_reference(seed, decimals, target_fraction):
    rng = np.random.default_rng(seed)
    n = 2000
    labels = (rng.random(n) < target_fraction).astype(int)
    scores = rng.normal(np.where(labels == 1, 0.8, -0.8), 1.0)
    if decimals is not None:  # heavy ties, including target/non-target ties
        scores = np.round(scores, decimals)
    fast, ref = verification_metrics(scores, labels), _reference(scores, labels)
    assert fast.keys() == ref.keys()
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], abs=1e-9), k


@pytest.mark.parametrize("seed,decimals,target_fraction", [(10, 2, 0.1), (11, 1, 0.5), (12, 3, 0.7), (13, None, 0.2)])
def test_identical_to_sklearn_roc_curve(seed, decimals, target_fraction):
    # scikit-learn sorts and counts on its own (descending mergesort, one point per distinct score
    # plus accept-none with drop_intermediate=False). Reversed, its points are ours; TPR = tps/n_tgt,
    # so rint(TPR * n_tgt) is the exact count of accepted targets. Values must be bit-identical.
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    labels = (rng.random(5000) < target_fraction).astype(int)
    scores = rng.normal(labels * 1.2, 1.0)
    if decimals is not None:
        scores = np.round(scores, decimals)
    sk_fpr, sk_tpr, sk_thr = roc_curve(labels, scores, drop_intermediate=False)
    n_tgt = int(labels.sum())
    sk_fnr = ((n_tgt - np.rint(sk_tpr * n_tgt)) / n_tgt)[::-1]
    sk_fpr = sk_fpr[::-1]
    fnr, fpr, thr = compute_det(scores, labels)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(fnr, sk_fnr)
    np.testing.assert_array_equal(thr, sk_thr[::-1])  # sklearn's accept-none threshold is +inf too
    m = verification_metrics(scores, labels)
    assert m["eer"] == compute_eer(sk_fnr, sk_fpr)[0]
    for p in (0.01, 0.05):
        assert m[f"min_dcf_{p}"] == min_dcf(sk_fnr, sk_fpr, p)


def test_matches_per_trial_convention_without_ties():
    # WeSpeaker's points: sort ascending, point i rejects trials 0..i (FNR = targets among them,
    # FPR = non-targets after them). With distinct scores EER and minDCF must agree with ours.
    rng = np.random.default_rng(7)
    labels = (rng.random(3000) < 0.2).astype(int)
    scores = rng.normal(labels * 1.5, 1.0)
    y = labels[np.argsort(scores)]
    fnr = np.cumsum(y) / y.sum()
    fpr = 1 - np.cumsum(1 - y) / (1 - y).sum()
    m = verification_metrics(scores, labels)
    assert m["eer"] == pytest.approx(compute_eer(fnr, fpr)[0], abs=1e-12)
    for p in (0.01, 0.05):
        assert m[f"min_dcf_{p}"] == pytest.approx(min_dcf(fnr, fpr, p), abs=1e-12)


def test_det_shape_and_monotone():
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(size=500), 1)
    labels = rng.random(500) < 0.3
    fnr, fpr, thr = compute_det(scores, labels)
    assert fnr.size == fpr.size == thr.size == np.unique(scores).size + 1
    assert (fnr[0], fpr[0], fnr[-1], fpr[-1]) == (0, 1, 1, 0)
    assert np.all(np.diff(fnr) >= 0) and np.all(np.diff(fpr) <= 0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("scores,labels,match", [
    ([], [], "empty"),
    ([0.1, 0.2], [1], "length mismatch"),
    ([0.1, 0.2, 0.3], [0, 1, 2], "labels must be 0/1"),
    ([0.1, 0.2], [1, 1], "no non-target"),
    ([0.1, 0.2], [0, 0], "no target"),
    ([0.1, float("nan"), 0.3], [0, 1, 1], "NaN"),
    ([0.1, float("inf"), 0.3], [0, 1, 1], "infinite"),
])
def test_input_errors(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        verification_metrics(scores, labels)


def test_curve_errors():
    with pytest.raises(ValueError):
        compute_eer([], [])
    with pytest.raises(ValueError):
        compute_eer([0, 1], [1])
    with pytest.raises(ValueError):
        min_dcf([0, 1], [1, 0], p_target=0.0)


# ---------------------------------------------------------------- cosine scoring, accuracy


def _embeddings(seed=0, n=20, dim=8):
    rng = np.random.default_rng(seed)
    return {f"utt{i}": rng.normal(size=dim).astype(np.float32) for i in range(n)}


def test_cosine_scores_dict_matches_per_pair():
    emb = _embeddings()
    rng = np.random.default_rng(1)
    keys = list(emb)
    left = [keys[i] for i in rng.integers(0, len(keys), 50)]
    right = [keys[i] for i in rng.integers(0, len(keys), 50)]
    got = cosine_scores(emb, (left, right))
    want = [float(np.dot(emb[a], emb[b]) / (np.linalg.norm(emb[a]) * np.linalg.norm(emb[b])))
            for a, b in zip(left, right)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # Same scores from an (n, 2) key array and from (matrix, index) / (matrix, key list).
    np.testing.assert_allclose(cosine_scores(emb, np.array([left, right]).T), got)
    matrix = np.stack([emb[k] for k in keys])
    np.testing.assert_allclose(cosine_scores((matrix, keys), (left, right)), got)
    index = {k: i for i, k in enumerate(keys)}
    np.testing.assert_allclose(cosine_scores((matrix, index), (left, right)), got)


def test_cosine_scores_self_is_one():
    emb = _embeddings()
    np.testing.assert_allclose(cosine_scores(emb, (list(emb), list(emb))), 1.0, rtol=1e-12)


def test_cosine_scores_errors():
    emb = _embeddings()
    with pytest.raises(ValueError, match="nope") as info:
        cosine_scores(emb, (["utt0"], ["nope"]))
    assert isinstance(info.value, KeyError) and isinstance(info.value, MissingEmbeddingError)
    with pytest.raises(ValueError, match="length"):
        cosine_scores(emb, (["utt0", "utt1"], ["utt2"]))
    emb["zero"] = np.zeros(8)
    with pytest.raises(ValueError, match="zero-norm.*'zero'"):
        cosine_scores(emb, (["utt0"], ["zero"]))
    with pytest.raises(ValueError, match="different sizes"):
        cosine_scores({"a": np.ones(3), "b": np.ones(4)}, (["a"], ["b"]))


def test_accuracy():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, [1, 0, 0]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        accuracy([], [])
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


# ---------------------------------------------------------------- plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC and os.path.getsize(path) > 1000
    assert not os.path.exists(str(path) + ".tmp.png")


def test_plot_det(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.1
    curves = {}
    for name, sep in (("trained", 3.0), ("untrained", 0.2)):
        fnr, fpr, _ = compute_det(rng.normal(labels * sep, 1.0), labels)
        curves[name] = (fnr, fpr)
    path = tmp_path / "sub" / "det.png"
    assert plot_det(curves, path, title="test") == str(path)
    _assert_png(path)
    plot_det({"trained": curves["trained"]}, tmp_path / "sub" / "det1.png")  # narrow axes
    _assert_png(tmp_path / "sub" / "det1.png")
    plot_det(curves, tmp_path / "sub" / "det2.png", p_targets=(0.01, 0.05), note="generated demo corpus")
    _assert_png(tmp_path / "sub" / "det2.png")
    assert sorted(os.listdir(tmp_path / "sub")) == ["det.png", "det1.png", "det2.png"]


def test_plot_training_curves(tmp_path):
    history = [{"epoch": e, "loss": 1 / e, "acc": e / 10, "lr": 0.1} for e in range(1, 6)]
    history[2]["eer"] = 0.2  # a key present in one epoch only
    path = tmp_path / "curves.png"
    plot_training_curves(history, path, keys=("loss", "acc", "eer", "missing"))
    _assert_png(path)
    plot_training_curves(history, path, keys=None)  # overwrite in place
    _assert_png(path)
    plot_training_curves([], tmp_path / "empty.png")  # nothing to plot: placeholder, no error
    _assert_png(tmp_path / "empty.png")
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "empty.png"]


def test_training_plot_shows_every_logged_curve(tmp_path):
    """What the speaker loop logs: the margin warm-up (the loss jump it causes must be explainable from the
    plot), an LR-step schedule and a validation metric all get a labelled panel; bookkeeping does not."""
    history = [{"epoch": e, "loss": 2 / e + (0.5 if e == 4 else 0), "acc": e / 10, "lr": 2e-3 * 0.8 ** e,
                "margin": min(max(e - 3, 0) / 3, 1) * 0.2, "head_m": 1.0 + (e > 5), "val_eer": 0.4 - e / 50,
                "samples_per_s": 900.0, "epoch_time_s": 1.0, "resumed_from_epoch": 0} for e in range(1, 13)]
    fig = training_figure(history)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "training loss", "training accuracy", "learning rate", "margin m (warm-up schedule)",
        "head m (LR-step schedule)", "validation EER"]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    margin = fig.axes[3].lines[0].get_ydata()
    assert list(margin) == [h["margin"] for h in history]
    assert fig.axes[2].get_yscale() == "log"   # lr decays 2e-3 -> 1e-4: a straight line on log axes
    path = tmp_path / "training.png"
    assert plot_training_curves(history, path) == str(path)
    _assert_png(path)
    runs = training_figure({"a": history, "b": history[:3]}, keys=("loss", "val_eer"))
    assert [ax.get_ylabel() for ax in runs.axes] == ["training loss", "validation EER"]
    assert len(runs.axes[1].lines) == 2
