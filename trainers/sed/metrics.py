"""Sound event detection metrics (arXiv 2106.06858, DCASE): clip-level AP / AUC on weak labels and segment-based
F1 / error rate on detected events, the latter from `sed_eval` so the numbers match DCASE's.

Events are dicts {onset, offset, label} (seconds, seconds, class name), as `frames_to_events` makes.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np


def clip_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """micro_ap (all (clip, class) pairs pooled), macro_ap (mean over classes with a positive) and auc
    (macro ROC AUC over classes with both positives and negatives); NaN where no class qualifies.
    Classes without positives are skipped because their AP is undefined, not 0."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != scores.shape:
        raise ValueError(f"y_true and scores must both be (clips, classes), got {y_true.shape} and {scores.shape}")
    y_true = (y_true > 0).astype(np.int64)
    positives = y_true.sum(axis=0)
    has_pos = positives > 0
    both = has_pos & (positives < y_true.shape[0])
    nan = float("nan")
    return {
        "micro_ap": float(average_precision_score(y_true.ravel(), scores.ravel())) if has_pos.any() else nan,
        "macro_ap": float(np.mean([average_precision_score(y_true[:, k], scores[:, k])
                                   for k in np.flatnonzero(has_pos)])) if has_pos.any() else nan,
        "auc": float(np.mean([roc_auc_score(y_true[:, k], scores[:, k])
                              for k in np.flatnonzero(both)])) if both.any() else nan,
    }


def frames_to_events(frame_prob: np.ndarray, hop_s: float, labels: Sequence[str],
                     threshold: float = 0.5) -> list[dict]:
    """Events from frame probabilities (T, C): each maximal run of frames with prob > threshold, frame i
    covering [i * hop_s, (i + 1) * hop_s). Sorted by onset, then label."""
    frame_prob = np.asarray(frame_prob)
    if frame_prob.ndim != 2 or frame_prob.shape[1] != len(labels):
        raise ValueError(f"frame_prob must be (frames, classes) with one class per label ({len(labels)}), "
                         f"got shape {frame_prob.shape}")
    if not hop_s > 0:
        raise ValueError(f"hop_s must be > 0, got {hop_s!r}")
    active = np.zeros((frame_prob.shape[0] + 2, frame_prob.shape[1]), dtype=np.int8)
    active[1:-1] = frame_prob > threshold
    events = []
    for k, label in enumerate(labels):
        edges = np.flatnonzero(np.diff(active[:, k]))  # run starts, then ends, alternating
        for start, end in zip(edges[::2], edges[1::2]):
            events.append({"onset": float(start * hop_s), "offset": float(end * hop_s), "label": label})
    return sorted(events, key=lambda e: (e["onset"], e["label"]))


def segment_metrics(reference: Mapping[str, list[dict]], estimated: Mapping[str, list[dict]],
                    labels: Sequence[str], segment_s: float = 1.0) -> dict[str, float]:
    """Segment-based f1, error_rate, precision, recall (sed_eval, micro over all segments of all files).

    Every reference file is scored; one missing from `estimated` counts as no detections. A system
    with no detections at all scores precision = F1 = 0 (sed_eval's "zero_score"), not NaN. Estimated
    files absent from the reference, and labels outside `labels`, are errors: both mean mismatched ids."""
    with warnings.catch_warnings():  # dcase_util imports pkg_resources, deprecated in setuptools
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from sed_eval.sound_event import SegmentBasedMetrics

    unknown_files = sorted(set(estimated) - set(reference))
    if unknown_files:
        raise ValueError(f"estimated events for files not in the reference: {unknown_files[:5]}")
    labels = list(labels)
    metrics = SegmentBasedMetrics(event_label_list=labels, time_resolution=float(segment_s))
    metrics.empty_system_output_handling = "zero_score"
    for file_id, ref_events in reference.items():
        metrics.evaluate(reference_event_list=_sed_eval_events(ref_events, file_id, labels),
                         estimated_event_list=_sed_eval_events(estimated.get(file_id, []), file_id, labels))
    overall = metrics.results_overall_metrics()
    return {"f1": float(overall["f_measure"]["f_measure"]),
            "error_rate": float(overall["error_rate"]["error_rate"]),
            "precision": float(overall["f_measure"]["precision"]),
            "recall": float(overall["f_measure"]["recall"])}


def _sed_eval_events(events: list[dict], file_id: str, labels: list[str]) -> list[dict]:
    """Our events as sed_eval's dicts (event_label, onset, offset, filename)."""
    out = []
    for e in events:
        if e["label"] not in labels:
            raise ValueError(f"file {file_id!r}: event label {e['label']!r} is not one of the evaluated labels")
        out.append({"event_label": e["label"], "onset": float(e["onset"]), "offset": float(e["offset"]),
                    "filename": str(file_id)})
    return out
