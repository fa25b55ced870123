"""FoolHD's objective: perceptual MFCC loss + Carlini-Wagner margin loss on the target's logits.

    perceptual = sum_t (1 - cos(MFCC_adv[t], MFCC_clean[t]))          per frame over the 30 cepstra, before VAD/CMN
    untargeted = max(Z_c - max_{j != c} Z_j, -kappa)                   c: the clean prediction
    targeted   = max(max_{j != t} Z_j - Z_t, -kappa)                   t: the target speaker
The official code writes max(., +kappa) (its kappa is 0, where both agree); here kappa is Carlini and Wagner's
confidence, so kappa > 0 keeps pushing until the margin exceeds kappa. Both losses sum over the batch.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def perceptual_loss(mfcc_adv: torch.Tensor, mfcc_clean: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(..., T, D) x 2 -> scalar sum over frames (and batch) of 1 - cosine similarity."""
    return (1 - F.cosine_similarity(mfcc_adv, mfcc_clean, dim=-1, eps=eps)).sum()


def margin_loss(logits: torch.Tensor, label: torch.Tensor, targeted: bool, kappa: float = 0.0) -> torch.Tensor:
    """(B, N) logits, (B,) labels (clean prediction, or target when `targeted`) -> scalar CW margin loss."""
    onehot = F.one_hot(label, logits.shape[-1]).bool()
    real = logits[onehot]
    other = logits.masked_fill(onehot, float("-inf")).amax(-1)
    margin = other - real if targeted else real - other
    return margin.clamp(min=-kappa).sum()
