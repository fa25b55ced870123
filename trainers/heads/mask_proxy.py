"""Mask Proxy (MP) and Multinomial Mask Proxy (MMP) heads (arXiv:2011.04491).

`mask_proxy` / `mp` and `mmp` / `multinomial_mask_proxy` are the losses of the official code,
jlian2/Masked-Proxy-Loss-for-Text-Indepedent-Speaker-Verification: loss/mp_balance.py (MP_Balance)
and loss/mmp_balance.py (MMP_Balance2). `mask_proxy_loo` and `mmp_loo` are this project's own
leave-one-out variants (further below), kept for comparison; they are not the published method.

All need P x K batches (P >= 2 speakers, K >= 2 utterances each; `trainers.heads.pk_sampler`). Each
head owns class proxies W (C x D), a learnable scale w and bias b; a logit is w·cos + b.

Official forms. e = L2-normalised embeddings. Per speaker s of the batch (the reference's X[s, k]):
  q_s   its first utterance in batch order (the query; pk_batches emits each speaker's K rows
        together, so this is X[s, 0])
  a_s   mean of its other K−1 utterances (the support centroid; NOT renormalised)
  Ŵ_j   W_j / ‖W_j‖
  reg   = mean_s CE(w·⟨a_s, Ŵ_t⟩ + b over t in batch, target s)  (P-way: centroids vs in-batch proxies)
  L_MP  = mean_s CE(w·⟨q_s, M_j⟩ + b over j = 1..C, target s) + λ·reg,
          M_j = a_j for in-batch speakers (the "mask"), Ŵ_j otherwise.
  With c_s = a_s / ‖a_s‖ and LSE1(z) = log(1 + Σ exp z):
  L_MMP = LSE1_s(−(w·⟨q_s, c_s⟩ + b))                  one term over the batch's positive pairs
        + mean_s LSE1_{j not in batch}(w·⟨q_s, Ŵ_j⟩ + b)  query vs out-of-batch proxies
        + mean_s LSE1_{t != s}(w·⟨q_s, c_t⟩ + b)          query vs the other speakers' centroids
        + λ·reg.
  b cancels in every cross-entropy (MP's loss never depends on it); in MMP it shifts the three
  LSE1 terms. MMP_Balance2 writes w·cos − b with b = 5: that is b = −5 here.
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


class _PKHead(Head):
    """What every Mask Proxy head shares: k, λ, proxies W, scale w, bias b and the P x K check."""

    needs_pk_batches = True  # the trainer then feeds P x K batches (trainers.heads.pk_sampler)

    def __init__(self, embed_dim: int, num_classes: int, k: int, lam: float, init_w: float,
                 init_b: float):
        super().__init__(embed_dim, num_classes)
        self.k = _k(k)
        self.lam = number("lam (λ)", lam, 0.0)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embed_dim))
        self.w = nn.Parameter(torch.tensor(number("init_w", init_w, 0.0, low_open=True)))
        self.b = nn.Parameter(torch.tensor(number("init_b", init_b, float("-inf"))))

    def scale(self) -> torch.Tensor:
        return self.w

    def logits(self, x, y=None):
        """Plain w·cos(x, W) + b over all classes (accuracy, eval)."""
        with torch.autocast(x.device.type, enabled=False):
            return cosine_matrix(x.float(), self.weight.float(), scale=self.scale()) + self.b

    def _check(self, x: torch.Tensor, y: torch.Tensor, min_speakers: int = 1):
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
        if classes.numel() < min_speakers:
            raise ValueError(f"{type(self).__name__} needs P >= {min_speakers} speakers per batch "
                             f"(its losses contrast the in-batch speakers), got P={classes.numel()}")
        return classes, inverse


def _log1p_sum_exp(z: torch.Tensor) -> torch.Tensor:
    """log(1 + Σ exp z) over the last dim, stably: logsumexp with a 0 logit prepended (−inf
    entries drop out with a zero gradient)."""
    return torch.logsumexp(F.pad(z, (1, 0)), dim=-1)


def _f32(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (autocast's half inputs are promoted; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class _Split(NamedTuple):
    classes: torch.Tensor  # (P,) the batch's labels, sorted
    q: torch.Tensor        # (P, D) unit query: each speaker's first utterance in batch order
    a: torch.Tensor        # (P, D) mean of its other K−1 unit embeddings
    proxies: torch.Tensor  # (C, D) unit proxies


class MaskProxyHead(_PKHead):
    """Mask Proxy loss as the official MP_Balance (module docstring): k >= 2 utterances per
    speaker, lam λ >= 0 (the reference's 0.5), init_w > 0 and init_b (its 10 and −5)."""

    def __init__(self, embed_dim: int, num_classes: int, k: int = 2, lam: float = 0.5,
                 init_w: float = 10.0, init_b: float = -5.0):
        super().__init__(embed_dim, num_classes, k, lam, init_w, init_b)
        nn.init.kaiming_normal_(self.weight, mode="fan_out")  # the reference's init

    def split(self, x: torch.Tensor, y: torch.Tensor) -> _Split:
        classes, inverse = self._check(x, y, min_speakers=2)
        e = F.normalize(_f32(x), dim=1)
        # a stable sort keeps batch order within each speaker, so column 0 is its first utterance
        rows = torch.argsort(inverse, stable=True).view(classes.numel(), self.k)
        return _Split(classes, e[rows[:, 0]], e[rows[:, 1:]].mean(1),
                      F.normalize(_f32(self.weight), dim=1))

    def regularizer(self, s: _Split) -> torch.Tensor:
        """P-way CE of the support centroids against the in-batch proxies (target: own speaker)."""
        z = self.w * (s.a @ s.proxies[s.classes].t()) + self.b
        return F.cross_entropy(z, torch.arange(z.shape[0], device=z.device))

    def forward(self, x, y):
        with torch.autocast(x.device.type, enabled=False):
            s = self.split(x, y)
            # the mask: in-batch speakers' proxy columns become the query's cosines to their
            # (unnormalised, as in the reference) support centroids
            cos = (s.q @ s.proxies.t()).index_copy(1, s.classes, s.q @ s.a.t())
            loss = F.cross_entropy(self.w * cos + self.b, s.classes)
            return loss + self.lam * self.regularizer(s)

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, k={self.k}, "
                f"lam={self.lam:g}")


class MultinomialMaskProxyHead(MaskProxyHead):
    """Multinomial Mask Proxy loss as the official MMP_Balance2 (module docstring): no
    cross-entropy on the queries, three log(1 + Σ exp) pair terms plus λ·regularizer."""

    def forward(self, x, y):
        with torch.autocast(x.device.type, enabled=False):
            s = self.split(x, y)
            c = F.normalize(s.a, dim=1)  # MMP renormalises the centroids (MP does not)
            pos = self.w * (s.q * c).sum(1) + self.b
            proxy_neg = (self.w * (s.q @ s.proxies.t()) + self.b).index_fill(1, s.classes, -torch.inf)
            centroid_neg = (self.w * (s.q @ c.t()) + self.b).fill_diagonal_(-torch.inf)
            return (_log1p_sum_exp(-pos) + _log1p_sum_exp(proxy_neg).mean()
                    + _log1p_sum_exp(centroid_neg).mean() + self.lam * self.regularizer(s))


# ---- this project's own leave-one-out variants (`mask_proxy_loo`, `mmp_loo`) -------------------
# This project's own reading of the paper, before the official code was matched (issue 15); not
# the published method. Every utterance i is a query; e_i unit embeddings of speaker y_i;
#   c_s       centroid of speaker s's K utterances;  c_s^(-i) = (K·c_s − e_i)/(K − 1) (leave-one-out)
#   M^(i)_j   = c_j^(-i) if j == y_i, c_j if j is another in-batch speaker, W_j otherwise
#   L_MP_loo  = mean_i CE(w·cos(e_i, M^(i)) + b, y_i) + λ·mean_s CE(w·cos(c_s, W) + b, s)  (C-way)
# (cos() renormalises centroids). mask=False keeps W in every row (the proxy-only form). b cancels
# in every CE. The loo MMP adds γ (mmp_weight) times
#   mean_i softplus(LSE_{n in N_i} w·cos(e_i, n) + LSE_{p in P_i} −w·cos(e_i, p)),
# P_i = i's K−1 same-speaker utterances, N_i = the other speakers' utterances (plus the
# out-of-batch proxies with mmp_proxy_negatives). w is clamped to >= 1e-6.

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


class LeaveOneOutMaskProxyHead(_PKHead):
    """This project's leave-one-out Mask Proxy (`mask_proxy_loo`; definition above).

    k: utterances per speaker in every batch (>= 2); lam: weight λ >= 0 of the centroid-vs-proxy
    CE; init_w > 0, init_b: initial scale and bias (GE2E's 10, −5); mask=False gives the
    proxy-only form (no in-batch replacement)."""

    def __init__(self, embed_dim: int, num_classes: int, k: int = 2, lam: float = 1.0,
                 init_w: float = 10.0, init_b: float = -5.0, mask: bool = True):
        super().__init__(embed_dim, num_classes, k, lam, init_w, init_b)
        nn.init.xavier_uniform_(self.weight)
        self.mask = bool(mask)

    def scale(self) -> torch.Tensor:
        return self.w.clamp(min=1e-6)

    def proxy_logits(self, x: torch.Tensor, unit_x: bool = True) -> torch.Tensor:
        """(B, C) w·cos(x_i, W_j), without the bias b (it cancels in every softmax).
        unit_x=False takes x as already unit-norm."""
        return cosine_matrix(x.float(), self.weight.float(), unit_x=unit_x, scale=self.scale())

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


class LeaveOneOutMMPHead(LeaveOneOutMaskProxyHead):
    """This project's loo MP + γ·(log-sum-exp over entity pairs) (`mmp_loo`; definition above).

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
