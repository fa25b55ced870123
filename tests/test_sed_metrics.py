"""SED metrics: clip AP / AUC against hand-computed values, frames -> events, and segment-based F1 / ER
(sed_eval) against per-segment counts worked out by hand."""
import math

import numpy as np
import pytest

from trainers.sed.metrics import clip_metrics, frames_to_events, segment_metrics


def _ap(y, s):
    """AP from its definition (distinct scores): mean over positives of the precision at their rank."""
    order = np.argsort(-np.asarray(s))
    hits = np.asarray(y)[order]
    return float(np.mean([hits[:i + 1].mean() for i in np.flatnonzero(hits)]))


def test_ap_helper_on_literal_case():
    # ranks: pos (P 1), neg, pos (P 2/3), neg
    assert _ap([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(5 / 6)


def test_clip_metrics_hand_computed():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.2, 0.05], [0.8, 0.7, 0.15], [0.3, 0.6, 0.25], [0.1, 0.4, 0.35]])
    out = clip_metrics(y, s)
    # class 0: 5/6 (as above); class 1: scores .7 pos, .6 pos, .4 neg, .2 neg -> 1; class 2: no positive
    assert out["macro_ap"] == pytest.approx((5 / 6 + 1) / 2)
    assert out["micro_ap"] == pytest.approx(_ap(y.ravel(), s.ravel()))
    # AUC class 0: positives .9, .3 vs negatives .8, .1 -> 3 of 4 pairs ordered; class 1: 4 of 4
    assert out["auc"] == pytest.approx((3 / 4 + 1) / 2)


def test_clip_metrics_perfect_and_degenerate():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    out = clip_metrics(y, y * 0.8 + 0.1)
    assert out == {"micro_ap": pytest.approx(1.0), "macro_ap": pytest.approx(1.0), "auc": pytest.approx(1.0)}
    all_pos = clip_metrics(np.ones((3, 2)), np.random.default_rng(0).random((3, 2)))
    assert all_pos["macro_ap"] == 1.0 and math.isnan(all_pos["auc"])
    assert all(math.isnan(v) for v in clip_metrics(np.zeros((3, 2)), np.ones((3, 2))).values())
    with pytest.raises(ValueError, match="clips, classes"):
        clip_metrics(y, y[:, :1])


def test_frames_to_events():
    prob = np.array([[0.9, 0.1], [0.8, 0.5], [0.1, 0.2], [0.6, 0.7], [0.2, 0.7], [0.7, 0.1]])
    events = frames_to_events(prob, 0.5, ["a", "b"])
    got = [(e["onset"], e["offset"], e["label"]) for e in events]
    # b's 0.5 at frame 1 is not above the threshold
    assert got == [(0.0, 1.0, "a"), (1.5, 2.0, "a"), (1.5, 2.5, "b"), (2.5, 3.0, "a")]
    assert frames_to_events(prob, 0.5, ["a", "b"], threshold=0.95) == []
    with pytest.raises(ValueError, match=r"one class per label \(1\)"):
        frames_to_events(prob, 0.5, ["a"])


def _ev(onset, offset, label):
    return {"onset": onset, "offset": offset, "label": label}


REFERENCE = {"f1": [_ev(0.0, 2.0, "dog"), _ev(2.5, 3.5, "cat")], "f2": [_ev(0.0, 1.0, "cat")]}


def test_segment_metrics_perfect():
    out = segment_metrics(REFERENCE, REFERENCE, ["dog", "cat"])
    assert out == {"f1": 1.0, "error_rate": 0.0, "precision": 1.0, "recall": 1.0}


def test_segment_metrics_hand_counts():
    estimated = {"f1": [_ev(0.5, 2.5, "dog")],                         # shifted dog, cat missed
                 "f2": [_ev(0.0, 1.0, "cat"), _ev(0.2, 0.4, "dog")]}   # an extra dog
    # 1 s segments (an event covers floor(onset) .. ceil(offset)):
    #   f1 seg 0: ref {dog} est {dog}  TP 1
    #   f1 seg 1: ref {dog} est {dog}  TP 1
    #   f1 seg 2: ref {cat} est {dog}  FP 1, FN 1 -> S 1
    #   f1 seg 3: ref {cat} est {}     FN 1       -> D 1
    #   f2 seg 0: ref {cat} est {cat, dog}  TP 1, FP 1 -> I 1
    tp, fp, fn, n_ref, s, d, i = 3, 2, 2, 5, 1, 1, 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    out = segment_metrics(REFERENCE, estimated, ["dog", "cat"])
    assert out["precision"] == pytest.approx(precision) and out["recall"] == pytest.approx(recall)
    assert out["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert out["error_rate"] == pytest.approx((s + d + i) / n_ref)


def test_segment_metrics_missing_and_bad_ids():
    only_f2 = {"f2": REFERENCE["f2"]}  # f1 undetected: its 4 reference segments are deletions
    out = segment_metrics(REFERENCE, only_f2, ["dog", "cat"])
    assert out["recall"] == pytest.approx(1 / 5) and out["error_rate"] == pytest.approx(4 / 5)
    silent = segment_metrics(REFERENCE, {}, ["dog", "cat"])
    assert silent["f1"] == 0.0 and silent["precision"] == 0.0 and silent["error_rate"] == 1.0
    with pytest.raises(ValueError, match="not in the reference"):
        segment_metrics(REFERENCE, {"f3": []}, ["dog", "cat"])
    with pytest.raises(ValueError, match="'bird'"):
        segment_metrics(REFERENCE, {"f1": [_ev(0.0, 1.0, "bird")]}, ["dog", "cat"])
