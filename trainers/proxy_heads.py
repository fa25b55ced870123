"""Mask Proxy (MP) and Multinomial Mask Proxy (MMP) heads (arXiv:2011.08483), registered in the
`trainers.heads` registry (trainers.heads imports this module at its end).

Both heads need P x K batches (P speakers, K utterances each; see `trainers.pk_sampler`). They own
class proxies W (num_classes x embed_dim), a learnable scale w (clamped to >= 1e-6) and bias b;
a logit is w·cos(u, v) + b, as in GE2E / angular-prototypical losses. Note that b is added to
every logit of each softmax alike, so it cancels in every cross-entropy (and in the multinomial
term's differences): it is kept for the paper's logit form and for `logits()`, but it gets a zero
gradient and never changes the loss.

Reading of the paper's definitions used here. Only the paper's abstract and DESIGN.md §5 are in
this repository, so the MP definition below follows DESIGN §5 literally and the exact MMP terms
are this module's concrete choice within "log-sum-exp over hard positive and negative entity
pairs" (not checked against the paper's equations). Symbols are this module's:

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

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.heads import Head, _number, cosine_matrix, register_head

SAMPLER_HINT = ("use trainers.pk_sampler.pk_batches (P speakers x K utterances per batch) "
                "instead of plain shuffled batches")


def _k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or int(k) != k:
        raise ValueError(f"k (utterances per speaker) must be an integer, got {k!r}")
    if k < 2:
        raise ValueError(f"Mask Proxy needs K >= 2 utterances per speaker (a query plus at least one "
                         f"utterance for its own speaker's centroid), got k={k!r}")
    return int(k)


class _ScaledCrossEntropy(torch.autograd.Function):
    """mean_i CE(s·cos_i + b, y_i) for scalar tensors s, b, saving only cos and the row
    log-sum-exps: autograd would keep cos for s's gradient and the log-softmax as well, and
    build the gradient in three (B, C) tensors; the backward here builds it in one.
    b is added to every logit of a row alike, so it cancels: the value is computed without it and
    its gradient is exactly 0 (it stays an input so that b always gets a gradient, as DDP needs)."""

    @staticmethod
    def forward(ctx, cos, s, b, y):
        rows = torch.arange(cos.shape[0], device=cos.device)
        target = cos[rows, y] * s
        top = cos.amax(dim=1) * s  # s > 0; log-sum-exp in one (B, C) temporary
        lse = torch.addcmul(-top[:, None], cos, s).exp_().sum(dim=1).log_().add_(top)
        ctx.save_for_backward(cos, s, b, y, lse)
        return (lse - target).mean()

    @staticmethod
    def backward(ctx, g):
        cos, s, b, y, lse = ctx.saved_tensors
        rows = torch.arange(cos.shape[0], device=cos.device)
        p = torch.addcmul(-lse[:, None], cos, s).exp_()  # softmax
        p[rows, y] -= 1.0
        g = g / cos.shape[0]
        gs = torch.dot(p.view(-1), cos.reshape(-1)) * g
        return p.mul_(s * g), gs.view_as(s), torch.zeros_like(b), None


def scaled_cross_entropy(cos, s, b, y):
    """F.cross_entropy(s * cos + b, y) with less memory; see `_ScaledCrossEntropy`."""
    return _ScaledCrossEntropy.apply(cos, s, b, y)


class _MaskAndPool(torch.autograd.Function):
    """From the (B, C) query-vs-proxy cosines: (masked, pooled), masked = cos with columns `cols`
    of each row overwritten by `values` (in place), pooled (P, C) = the sum of the unmasked rows
    of each class (`members`: (P, K) row indices). Autograd would build cos's gradient in six
    (B, C) passes (scatter's clone and zeroing, index_select's zeros and index_add, the sum's
    expand, adding the two paths); here in two."""

    @staticmethod
    def forward(ctx, cos, members, cols, values):
        pooled = cos.index_select(0, members[:, 0])
        for k in range(1, members.shape[1]):
            pooled += cos.index_select(0, members[:, k])
        cos.scatter_(1, cols, values)
        ctx.mark_dirty(cos)
        ctx.save_for_backward(members, cols)
        return cos, pooled

    @staticmethod
    def backward(ctx, g_masked, g_pooled):
        members, cols = ctx.saved_tensors
        g = g_masked.scatter(1, cols, 0.0)
        for k in range(members.shape[1]):
            g.index_add_(0, members[:, k], g_pooled)
        return g, None, None, g_masked.gather(1, cols)


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


@register_head("mask_proxy", "mp")
class MaskProxyHead(Head):
    """Mask Proxy loss (see the module docstring for the exact definition).

    k: utterances per speaker in every batch (>= 2); lam: weight λ >= 0 of the centroid-vs-proxy
    CE; init_w > 0, init_b: initial scale and bias (GE2E's 10, −5); mask=False gives the
    proxy-only form (no in-batch replacement)."""

    needs_pk_batches = True  # the trainer then feeds P x K batches (trainers.pk_sampler)

    def __init__(self, embed_dim: int, num_classes: int, k: int = 2, lam: float = 1.0,
                 init_w: float = 10.0, init_b: float = -5.0, mask: bool = True):
        super().__init__(embed_dim, num_classes)
        self.k = _k(k)
        self.lam = _number("lam (λ)", lam, 0.0)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.w = nn.Parameter(torch.tensor(_number("init_w", init_w, 0.0, low_open=True)))
        self.b = nn.Parameter(torch.tensor(_number("init_b", init_b, float("-inf"))))
        self.mask = bool(mask)

    # ---- helpers -------------------------------------------------------------------------------
    def scale(self) -> torch.Tensor:
        return self.w.clamp(min=1e-6)

    def proxy_cosines(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) cos(x_i, W_j)."""
        return cosine_matrix(x.float(), self.weight.float())

    def logits(self, x, y=None):
        """Plain w·cos(x, W) + b over all classes (accuracy, eval)."""
        with torch.autocast(x.device.type, enabled=False):
            return self.scale() * self.proxy_cosines(x) + self.b

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

    def _parts(self, x, y):
        """Shared pieces: normalised e (B,D), classes (P,), inverse (B,), centroids c (P,D),
        leave-one-out own centroids (B,D)."""
        classes, inverse = self._check(x, y)
        e = F.normalize(x.float(), dim=1)
        P = classes.numel()
        sums = torch.zeros(P, e.shape[1], dtype=e.dtype, device=e.device).index_add_(0, inverse, e)
        c = sums / self.k
        loo = (sums.index_select(0, inverse) - e) / (self.k - 1)  # (a backward without index_put)
        return e, classes, inverse, c, loo

    def masked_and_centroid_cosines(self, cos, e, classes, inverse, c, loo):
        """(masked (B, C), centroid (P, C)) from the (B, C) query-vs-proxy cosines `cos`, which
        are overwritten. masked[i] = cos(e_i, M^(i)) (unchanged when mask=False); centroid =
        cos(c_s, W), got from the queries' cosines: c_s is the mean of K unit vectors, so
        cos(c_s, W) = Σ_{i in s} cos(e_i, W) / (K‖c_s‖), a sum instead of another
        (P × D) @ (D × C) product and its gradient."""
        members = torch.argsort(inverse, stable=True).view(classes.numel(), self.k)
        if self.mask:
            cos_c = e @ F.normalize(c, dim=1).t()                    # (B, P) vs full centroids
            own = (e * F.normalize(loo, dim=1)).sum(1)               # (B,) vs own LOO centroid
            values = cos_c.scatter(1, inverse.view(-1, 1), own.view(-1, 1))
            cols = classes.view(1, -1).expand(e.shape[0], -1)
        else:
            values, cols = e.new_empty(e.shape[0], 0), inverse.new_empty(e.shape[0], 0)
        masked, pooled = _MaskAndPool.apply(cos, members, cols, values)
        inv = (self.k * torch.linalg.vector_norm(c, dim=1)).clamp_min(1e-12).reciprocal()
        return masked, pooled * inv[:, None]

    def mp_loss(self, x, y, parts=None):
        e, classes, inverse, c, loo = parts if parts is not None else self._parts(x, y)
        s, b = self.scale(), self.b
        cos, cos_cw = self.masked_and_centroid_cosines(self.proxy_cosines(e), e, classes, inverse,
                                                       c, loo)
        loss = scaled_cross_entropy(cos, s, b, y)
        if self.lam > 0:
            loss = loss + self.lam * scaled_cross_entropy(cos_cw, s, b, classes)
        return loss

    def forward(self, x, y):
        with torch.autocast(x.device.type, enabled=False):
            return self.mp_loss(x, y)

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, k={self.k}, "
                f"lam={self.lam:g}, mask={self.mask}")


@register_head("mmp", "multinomial_mask_proxy")
class MultinomialMaskProxyHead(MaskProxyHead):
    """MP + γ·(log-sum-exp over hard positive / hard negative entity pairs); see module docstring.

    mmp_weight: γ >= 0; mmp_proxy_negatives: also count the out-of-batch proxies as negatives of
    the multinomial term."""

    def __init__(self, embed_dim: int, num_classes: int, k: int = 2, lam: float = 1.0,
                 init_w: float = 10.0, init_b: float = -5.0, mask: bool = True,
                 mmp_weight: float = 1.0, mmp_proxy_negatives: bool = False):
        super().__init__(embed_dim, num_classes, k=k, lam=lam, init_w=init_w, init_b=init_b,
                         mask=mask)
        self.mmp_weight = _number("mmp_weight (γ)", mmp_weight, 0.0)
        self.mmp_proxy_negatives = bool(mmp_proxy_negatives)

    def multinomial_loss(self, e, classes, inverse) -> torch.Tensor:
        s = self.scale()
        sim = s * _Gram.apply(e)                                     # (B, B)
        same = inverse.view(-1, 1) == inverse.view(1, -1)
        eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
        neg_inf = torch.finfo(sim.dtype).min
        lse_pos = torch.logsumexp((-sim).masked_fill(~same | eye, neg_inf), dim=1)
        neg = sim.masked_fill(same, neg_inf)
        if self.mmp_proxy_negatives:
            out = torch.ones(self.num_classes, dtype=torch.bool, device=e.device)
            out[classes] = False
            neg = torch.cat([neg, s * cosine_matrix(e, self.weight[out].float())], dim=1)
        has_neg = (~same).any(1) if not self.mmp_proxy_negatives else None
        lse_neg = torch.logsumexp(neg, dim=1)
        term = F.softplus(lse_neg + lse_pos)
        if has_neg is not None:
            term = torch.where(has_neg, term, torch.zeros_like(term))
        return term.mean()

    def forward(self, x, y):
        with torch.autocast(x.device.type, enabled=False):
            parts = self._parts(x, y)
            loss = self.mp_loss(x, y, parts)
            if self.mmp_weight > 0:
                e, classes, inverse, _, _ = parts
                loss = loss + self.mmp_weight * self.multinomial_loss(e, classes, inverse)
            return loss

    def extra_repr(self):
        return (super().extra_repr() + f", mmp_weight={self.mmp_weight:g}, "
                f"mmp_proxy_negatives={self.mmp_proxy_negatives}")
