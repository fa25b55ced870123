"""Scores of main-speaker detection and highlighting, each pinned by a test against a hand computation.

    map          average precision of the main-speaker score over every real (track, segment) pair of the test
                 set, pooled (as AVA-ActiveSpeaker's official mAP pools every face frame): with the pairs sorted by
                 descending score, AP = sum over positives at rank i of precision@i / #positives (no interpolation;
                 tied scores are ranked as one block, as scikit-learn does)
    accuracy     over segments that have a main speaker: the highest-scoring real track is that speaker
    switch_*     role-switch detection: a segment switches where its main speaker differs from the previous
                 segment's (both someone); predicted main speaker = the top track if its probability >= 0.5 else
                 nobody; predicted and true switch segments are matched one-to-one within +-`tolerance` segments
                 (in time order), F1 = 2 TP / (2 TP + FP + FN), pooled over the test windows
    si_sdri      SI-SDR (fast_bss_eval) of the highlighted audio minus SI-SDR of the mixture, both against the main
                 speaker's clean voice, mean over the windows where it is known (dB)
"""
from __future__ import annotations

import numpy as np
import torch

from datasets.avspeaker.roles import segment_switches


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    scores, targets = np.asarray(scores, float), np.asarray(targets, bool)
    if not targets.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], targets[order]
    last_of_block = np.r_[s[1:] != s[:-1], True]          # ties: precision counted at the end of each block
    tp = np.cumsum(y)[last_of_block]
    rank = np.flatnonzero(last_of_block) + 1
    new_tp = np.diff(np.r_[0, tp])
    return float((new_tp * tp / rank).sum() / y.sum())


def match_switches(pred: np.ndarray, true: np.ndarray, tolerance: int = 1) -> tuple[int, int, int]:
    """(TP, FP, FN) of predicted vs true switch segment indices, greedy one-to-one within +-tolerance."""
    free = sorted(int(t) for t in true)
    tp = 0
    for p in sorted(int(p) for p in pred):
        hit = next((t for t in free if abs(t - p) <= tolerance), None)
        if hit is not None:
            free.remove(hit)
            tp += 1
    return tp, len(pred) - tp, len(free)


def predict(model, batches, audio: bool = True) -> dict:
    """Probabilities and truths of every window: {prob (W, N, S), valid, roles, main_id, si_sdr, si_sdr_mix}."""
    from trainers.avspeaker.task import tensors

    out: dict[str, list] = {k: [] for k in ("prob", "valid", "roles", "main_id", "sdr", "sdr_mix", "mask", "est")}
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for rows in batches:
            b = {k: v.to(device) for k, v in tensors(rows).items()}
            valid = b["valid"].bool()
            logits, h = model.detect(b["faces"], b["mel"], valid)
            out["prob"].append(torch.sigmoid(logits).cpu().numpy())
            for k in ("valid", "roles", "main_id"):
                out[k].append(b[k].cpu().numpy())
            if audio:
                mask, est = model.highlight(b["mix"], logits, h, valid)
                known = (b["has_main"].bool() & (b["main"].pow(2).mean(-1) > 1e-6)).cpu().numpy()
                ref, est_np, mix = (x.double().cpu().numpy() for x in (b["main"], est, b["mix"]))
                out["sdr"].append(np.where(known, si_sdr_db(ref, est_np), np.nan))
                out["sdr_mix"].append(np.where(known, si_sdr_db(ref, mix), np.nan))
                out["mask"].append(mask[:1].cpu().numpy())
                out["est"].append(est[:1].cpu().numpy())
    return {k: (np.concatenate(v) if v else None) for k, v in out.items()}


def si_sdr_db(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    """SI-SDR (dB) per row by fast_bss_eval (the BSS-eval library), for (W, samples) arrays."""
    import fast_bss_eval

    return np.asarray(fast_bss_eval.si_sdr(ref[:, None, :], est[:, None, :], zero_mean=True)).reshape(-1)


def score(pred: dict, tolerance: int = 1) -> dict:
    prob, valid, roles, main_id = pred["prob"], pred["valid"], pred["roles"], pred["main_id"]
    pairs = np.broadcast_to(valid[:, :, None], prob.shape)
    out = {"map": average_precision(prob[pairs], roles[pairs] == 1)}
    masked = np.where(pairs, prob, -1.0)
    top = masked.argmax(axis=1)                                       # (W, S)
    known = main_id >= 0
    out["accuracy"] = float((top == main_id)[known].mean()) if known.any() else float("nan")
    guess = np.where(masked.max(axis=1) >= 0.5, top, -1)
    tp = fp = fn = 0
    for g, t in zip(guess, main_id):
        a, b, c = match_switches(np.flatnonzero(segment_switches(g)), np.flatnonzero(segment_switches(t)), tolerance)
        tp, fp, fn = tp + a, fp + b, fn + c
    out["switch_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    out["switches_true"], out["switches_pred"] = tp + fn, tp + fp
    if pred.get("sdr") is not None and np.isfinite(pred["sdr"]).any():
        out["si_sdr"] = float(np.nanmean(pred["sdr"]))
        out["si_sdr_mix"] = float(np.nanmean(pred["sdr_mix"]))
        out["si_sdri"] = float(np.nanmean(pred["sdr"] - pred["sdr_mix"]))
    return out
