"""Mask Proxy (MP) and Multinomial Mask Proxy (MMP) heads (arXiv:2011.04491; official code
jlian2/Masked-Proxy-Loss-for-Text-Indepedent-Speaker-Verification).

Both heads need P x K batches (P speakers, K utterances each; see `trainers.heads.pk_sampler`). They own
class proxies W (num_classes x embed_dim), a learnable scale w (clamped to >= 1e-6) and bias b;
a logit is w·cos(u, v) + b, as in GE2E / angular-prototypical losses. Note that b is added to
every logit of each softmax alike, so it cancels in every cross-entropy (and in the multinomial
term's differences): it is kept for the paper's logit form and for `logits()`, but it gets a zero
gradient and never changes the loss.

Reading of the paper's definitions used here. The MP definition below is this module's reading of
the paper's description, and the exact MMP terms are its concrete choice within "log-sum-exp over
hard positive and negative entity pairs"; neither has been matched line by line against the
official code (loss/mp_balance.py, loss/mmp_balance.py), which the project's issue 15 found to
differ. Symbols are this module's:

  e_i        L2-normalised embedding of utterance i (speaker y_i). Centroids are means of the
             normalised embeddings; cos() normalises the centroid again.
  c_s        centroid of speaker s's K in-batch utterances:  c_s = mean_{j: y_j = s} e_j
  c_s^(-i)   leave-one-out centroid of i's own speaker:      (K·c_s − e_i) / (K − 1)
  M^(i)      the "masked" proxy matrix for query i: row j is
                 c_j^(-i)  if j == y_i                (own speaker, query excluded)
                 c_j       if j is another in-batch speaker
                 W_j       otherwise                  (out-of-batch classes keep their proxies)
  L_MP  = mean_i CE(w·cos(e_i, M^(i)) + b, y_i)
        + λ · mean_{s in batch} CE(w·cos(c_s, W) + b, s)     (centroids vs learned proxies)

  The first term is the "entity-based" part (in-batch speakers are represented by real data
  points, so the query competes directly with other speakers' utterances) mixed with the
  "proxy-based" part (the rest of the classes); the λ term is what trains W (the first term
  never touches an in-batch proxy) and keeps the proxies aligned with the entities.

  Proxy-only limit: with mask=False no row is replaced and
      L = mean_i CE(w·cos(e_i, W) + b, y_i) + λ · (the same centroid term),
  the plain proxy loss MP is built from (what "one utterance per speaker" leaves: with K = 1
  there is no other utterance to stand in for the speaker, so only proxies remain; K = 1 itself is
  refused, since the masked loss is undefined there). The masked loss equals this limit exactly
  when every in-batch (leave-one-out) centroid points along its proxy, e.g. identical utterances
  per speaker and W_s ∝ e_s: then M^(i) and W give the same cosines.
  tests/test_proxy_heads.py checks that identity.

  MMP (multinomial) adds, with weight `mmp_weight` (γ), a log-sum-exp term over the entity pairs
  of the query, so the hardest pairs dominate:
      P_i = {e_j : y_j = y_i, j != i}          (K−1 positive utterances: hard positive = least
                                                similar one)
      N_i = {e_j : y_j != y_i}                 (negative utterances of the other in-batch
                                                speakers: hard negative = most similar one)
      L_mult = mean_i log(1 + Σ_{n in N_i} exp(w·cos(e_i, n)) · Σ_{p in P_i} exp(−w·cos(e_i, p)))
             = mean_i softplus(LSE_n w·cos(e_i, n) + LSE_p (−w·cos(e_i, p)))
  (the bias b cancels in each difference w·cos_n + b − (w·cos_p + b)). With
  `mmp_proxy_negatives=True` N_i also includes the out-of-batch proxies {W_j : j not in batch}
  (the rows of M^(i) that were not masked), so query-vs-proxy negatives compete as well.
  L_MMP = L_MP + γ · L_mult.  With P = 1 and no proxy negatives N_i is empty: the term is 0.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from trainers.heads.base import Head
from trainers.heads.ops import cosine_matrix, number, rowdot

SAMPLER_HINT = ("use trainers.heads.pk_sampler.pk_batches (P speakers x K utterances per batch) "
                "instead of plain shuffled batches")


def _k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or int(k) != k:
        raise ValueError(f"k (utterances per speaker) must be an integer, got {k!r}")
    if k < 2:
        raise ValueError(f"Mask Proxy needs K >= 2 utterances per speaker (a query plus at least one "
                         f"utterance for its own speaker's centroid), got k={k!r}")
    return int(k)


class _CrossEntropy(torch.autograd.Function):
    """F.cross_entropy(z, y) (mean) whose backward turns the saved log-softmax into the gradient
    in place: no zero-filled (B, C) buffer for NLL's gradient and no second (B, C) output, as
    autograd would build. The saved tensor is consumed, so a second backward through the same
    graph (retain_graph) is refused rather than computed from it."""

    @staticmethod
    def forward(ctx, z, y):
        logp = torch.log_softmax(z, dim=1)
        ctx.save_for_backward(logp, y)
        ctx.consumed = False
        return -logp.gather(1, y.view(-1, 1)).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        if ctx.consumed:
            raise RuntimeError("the Mask Proxy heads' cross-entropy frees its saved softmax in "
                               "backward: call backward once per forward (no retain_graph)")
        ctx.consumed = True
        logp, y = ctx.saved_tensors
        p = logp.exp_()
        p[torch.arange(p.shape[0], device=p.device), y] -= 1.0
        return p.mul_(g / p.shape[0]), None


class _MaskAndPool(torch.autograd.Function):
    """From the (B, C) query-vs-proxy logits: (masked, pooled), masked = the logits with the
    columns `cols` (P,) of every row overwritten by `values` (B, P), in place; pooled (P, C) =
    scales[p] times the sum of the unmasked rows of class p (`inverse`: each row's class).
    Autograd would build the gradient in eight (B, C) or (P, C) passes (scatter's clone and
    zeroing, index_select's zeros and index_add, the products' two gradients, adding the two
    paths); here in place: `masked` and `pooled` each have one consumer, this module's
    cross-entropy, whose fresh gradient buffer nothing else reads."""

    @staticmethod
    def forward(ctx, z, inverse, cols, values, scales):
        pooled = z.new_zeros(scales.shape[0], z.shape[1]).index_add_(0, inverse, z)
        pooled.mul_(scales[:, None])
        z.index_copy_(1, cols, values)
        ctx.mark_dirty(z)
        ctx.save_for_backward(inverse, cols, scales, pooled)
        return z, pooled

    @staticmethod
    @once_differentiable
    def backward(ctx, g_masked, g_pooled):
        inverse, cols, scales, pooled = ctx.saved_tensors
        g_values = g_masked.index_select(1, cols)
        g_scales = rowdot(g_pooled, pooled) / scales  # pooled / scales: the plain sums
        g = g_masked.index_fill_(1, cols, 0.0)
        g += g_pooled.mul_(scales[:, None]).index_select(0, inverse)
        return g, None, None, g_values, g_scales


class _Gram(torch.autograd.Function):
    """e @ eᵀ with a backward of one matrix product, (G + Gᵀ)·e, instead of autograd's two."""

    @staticmethod
    def forward(ctx, e):
        ctx.save_for_backward(e)
        return e @ e.t()

    @staticmethod
    def backward(ctx, g):
        (e,) = ctx.saved_tensors
        return (g + g.t()) @ e


def _skip(idx: torch.Tensor, n: int) -> torch.Tensor:
    """(len(idx), n − 1): row r lists 0..n−1 without idx[r], in order."""
    j = torch.arange(n - 1, device=idx.device).view(1, -1)
    return j + (j >= idx.view(-1, 1)).to(j.dtype)


class _Batch(NamedTuple):
    """A P x K batch's shared pieces: normalised e (B, D), classes (P,), inverse (B,: each row's
    index into classes) and the Gram matrix e eᵀ (B, B), from which every centroid quantity
    follows without another product with e."""
    e: torch.Tensor
    classes: torch.Tensor
    inverse: torch.Tensor
    gram: torch.Tensor


class MaskProxyHead(Head):
    """Mask Proxy loss (see the module docstring for the exact definition).

    k: utterances per speaker in every batch (>= 2); lam: weight λ >= 0 of the centroid-vs-proxy
    CE; init_w > 0, init_b: initial scale and bias (GE2E's 10, −5); mask=False gives the
    proxy-only form (no in-batch replacement)."""

    needs_pk_batches = True  # the trainer then feeds P x K batches (trainers.heads.pk_sampler)

    def __init__(self, embed_dim: int, num_classes: int, k: int = 2, lam: float = 1.0,
                 init_w: float = 10.0, init_b: float = -5.0, mask: bool = True):
        super().__init__(embed_dim, num_classes)
        self.k = _k(k)
        self.lam = number("lam (λ)", lam, 0.0)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.w = nn.Parameter(torch.tensor(number("init_w", init_w, 0.0, low_open=True)))
        self.b = nn.Parameter(torch.tensor(number("init_b", init_b, float("-inf"))))
        self.mask = bool(mask)

    # ---- helpers -------------------------------------------------------------------------------
    def scale(self) -> torch.Tensor:
        return self.w.clamp(min=1e-6)

    def proxy_logits(self, x: torch.Tensor, unit_x: bool = True) -> torch.Tensor:
        """(B, C) w·cos(x_i, W_j), without the bias b (it cancels in every softmax).
        unit_x=False takes x as already unit-norm."""
        return cosine_matrix(x.float(), self.weight.float(), unit_x=unit_x, scale=self.scale())

    def logits(self, x, y=None):
        """Plain w·cos(x, W) + b over all classes (accuracy, eval)."""
        with torch.autocast(x.device.type, enabled=False):
            return self.proxy_logits(x) + self.b

    def _check(self, x: torch.Tensor, y: torch.Tensor):
        if x.dim() != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(f"expected embeddings (B, {self.embed_dim}), got {tuple(x.shape)}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"expected labels (B,) with B={x.shape[0]}, got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}), got range "
                             f"[{int(y.min())}, {int(y.max())}]")
        classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
        bad = counts != self.k
        if y.numel() == 0 or bool(bad.any()):
            detail = "empty batch" if y.numel() == 0 else (
                f"label {int(classes[bad][0])} appears {int(counts[bad][0])} time(s)")
            raise ValueError(f"{type(self).__name__} needs every batch grouped as P speakers x "
                             f"K={self.k} utterances, but {detail}; {SAMPLER_HINT}")
        return classes, inverse

    def _parts(self, x, y) -> _Batch:
        classes, inverse = self._check(x, y)
        e = F.normalize(x.float(), dim=1)
        return _Batch(e, classes, inverse, _Gram.apply(e))

    def masked_and_centroid_logits(self, z, s, parts: _Batch):
        """(masked (B, C), centroid (P, C)) from the (B, C) query-vs-proxy logits z = s·cos(e, W),
        which are overwritten. masked[i] = s·cos(e_i, M^(i)) (z itself when mask=False);
        centroid = s·cos(c_p, W), got from the queries' logits: c_p is the mean of K unit
        vectors, so cos(c_p, W) = Σ_{i in p} cos(e_i, W) / ‖K c_p‖, a sum instead of another
        (P × D) @ (D × C) product and its gradient. With G = e eᵀ, the sums S_p = K c_p give
        A[i, p] = e_i·S_p = Σ_{j in p} G_ij and ‖S_p‖² = Σ_{i in p} A[i, p]; i's own
        leave-one-out sum S_p − e_i has e_i·(S_p − e_i) = A[i, p] − G_ii and squared norm
        ‖S_p‖² − 2 A[i, p] + G_ii."""
        e, classes, inverse, gram = parts
        a = gram.new_zeros(gram.shape[0], classes.numel()).index_add_(1, inverse, gram)  # (B, P)
        a_own = a.gather(1, inverse.view(-1, 1)).squeeze(1)                             # (B,)
        norm2 = a_own.new_zeros(classes.numel()).index_add_(0, inverse, a_own)           # ‖S_p‖²
        inv = norm2.clamp_min(1e-24).rsqrt()
        if self.mask:
            g_ii = gram.diagonal()
            loo2 = (norm2.index_select(0, inverse) - 2 * a_own + g_ii).clamp_min(1e-24)
            own = (a_own - g_ii) * loo2.rsqrt()                     # cos(e_i, own LOO centroid)
            values = s * (a * inv).scatter(1, inverse.view(-1, 1), own.view(-1, 1))
            cols = classes
        else:
            values, cols = e.new_empty(e.shape[0], 0), classes[:0]
        return _MaskAndPool.apply(z, inverse, cols, values, inv)

    def mp_loss(self, x, y, parts=None):
        parts = parts if parts is not None else self._parts(x, y)
        # e is unit-norm: unit_x=False skips normalising it again (F.normalize's backward
        # projects out the radial part of e's gradient anyway)
        z, z_c = self.masked_and_centroid_logits(self.proxy_logits(parts.e, unit_x=False),
                                                 self.scale(), parts)
        loss = _CrossEntropy.apply(z, y)
        if self.lam > 0:
            loss = loss + self.lam * _CrossEntropy.apply(z_c, parts.classes)
        return loss + 0.0 * self.b  # b cancels; a zero gradient still reaches it (DDP needs one)

    def forward(self, x, y):
        with torch.autocast(x.device.type, enabled=False):
            return self.mp_loss(x, y)

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, k={self.k}, "
                f"lam={self.lam:g}, mask={self.mask}")


class MultinomialMaskProxyHead(MaskProxyHead):
    """MP + γ·(log-sum-exp over hard positive / hard negative entity pairs); see module docstring.

    mmp_weight: γ >= 0; mmp_proxy_negatives: also count the out-of-batch proxies as negatives of
    the multinomial term."""

    def __init__(self, embed_dim: int, num_classes: int, k: int = 2, lam: float = 1.0,
                 init_w: float = 10.0, init_b: float = -5.0, mask: bool = True,
                 mmp_weight: float = 1.0, mmp_proxy_negatives: bool = False):
        super().__init__(embed_dim, num_classes, k=k, lam=lam, init_w=init_w, init_b=init_b,
                         mask=mask)
        self.mmp_weight = number("mmp_weight (γ)", mmp_weight, 0.0)
        self.mmp_proxy_negatives = bool(mmp_proxy_negatives)

    def multinomial_loss(self, parts: _Batch) -> torch.Tensor:
        e, inverse = parts.e, parts.inverse
        P, K = parts.classes.numel(), self.k
        members = torch.argsort(inverse, stable=True).view(P, K)         # each class's rows
        s = self.scale()
        sim = s * parts.gram                                             # (B, B)
        # Gather each query's K−1 positives and (P−1)·K entity negatives rather than masking
        # the (B, B) matrix: exp() of masked-out huge negatives is ~10x slower on CPU.
        # (Index arithmetic: boolean-mask indexing costs a nonzero() and is slower.)
        rank = torch.empty_like(inverse)
        rank[members.view(-1)] = torch.arange(K, device=e.device).repeat(P)  # i = members[., rank]
        pos = members.index_select(0, inverse).gather(1, _skip(rank, K))  # (B, K−1) own others
        others = members.index_select(0, _skip(torch.arange(P, device=e.device), P).view(-1))
        others = others.view(P, (P - 1) * K).index_select(0, inverse)   # (B, (P−1)·K)
        lse_pos = torch.logsumexp(-sim.gather(1, pos), dim=1)
        neg = sim.gather(1, others)
        if self.mmp_proxy_negatives:
            out = torch.ones(self.num_classes, dtype=torch.bool, device=e.device)
            out[parts.classes] = False
            neg = torch.cat([neg, cosine_matrix(e, self.weight[out].float(), unit_x=False,
                                                   scale=s)], dim=1)
        if neg.shape[1] == 0:  # one speaker and no proxy negatives: no pair to contrast
            return 0.0 * lse_pos.mean()
        return F.softplus(torch.logsumexp(neg, dim=1) + lse_pos).mean()

    def forward(self, x, y):
        with torch.autocast(x.device.type, enabled=False):
            parts = self._parts(x, y)
            loss = self.mp_loss(x, y, parts)
            if self.mmp_weight > 0:
                loss = loss + self.mmp_weight * self.multinomial_loss(parts)
            return loss

    def extra_repr(self):
        return (super().extra_repr() + f", mmp_weight={self.mmp_weight:g}, "
                f"mmp_proxy_negatives={self.mmp_proxy_negatives}")
