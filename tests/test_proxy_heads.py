"""Mask Proxy / Multinomial Mask Proxy heads and the streaming P x K sampler."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.heads import HEADS, build_head
from trainers.heads.mask_proxy import (
    LeaveOneOutMaskProxyHead,
    LeaveOneOutMMPHead,
    MaskProxyHead,
    MultinomialMaskProxyHead,
)
from trainers.heads.pk_sampler import pk_batches


def _f(t):
    return float(t.detach())


def _cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def _pk(P=3, K=3, D=5, C=7, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    labels = labels if labels is not None else [1, 4, 6][:P]
    x = torch.randn(P * K, D, generator=g, dtype=torch.float64).float()
    y = torch.tensor([lab for lab in labels for _ in range(K)])
    return x, y


def _mp_by_hand(head, x, y):
    """Loop-by-loop MP: per query, build the masked proxy matrix row by row."""
    w, b = _f(head.w.clamp(min=1e-6)), _f(head.b)
    W = head.weight.detach().double()
    e = [xi.double() / xi.double().norm() for xi in x.detach()]
    labels = [int(v) for v in y]
    classes = sorted(set(labels))
    members = {c: [j for j, lab in enumerate(labels) if lab == c] for c in classes}
    total = 0.0
    for i, s in enumerate(labels):
        logits = []
        for j in range(head.num_classes):
            if j == s:
                row = sum(e[m] for m in members[j] if m != i) / (len(members[j]) - 1)
            elif j in members:
                row = sum(e[m] for m in members[j]) / len(members[j])
            else:
                row = W[j]
            logits.append(w * _cos(e[i], row) + b)
        total += -logits[s] + math.log(sum(math.exp(v) for v in logits))
    loss = total / len(labels)
    cent = 0.0
    for s in classes:
        c = sum(e[m] for m in members[s]) / len(members[s])
        logits = [w * _cos(c, W[j]) + b for j in range(head.num_classes)]
        cent += -logits[s] + math.log(sum(math.exp(v) for v in logits))
    return loss + head.lam * cent / len(classes)


def _mult_by_hand(head, x, y, proxy_negatives=False):
    w = _f(head.w.clamp(min=1e-6))
    W = head.weight.detach().double()
    e = [xi.double() / xi.double().norm() for xi in x.detach()]
    labels = [int(v) for v in y]
    total = 0.0
    for i in range(len(labels)):
        pos = sum(math.exp(-w * _cos(e[i], e[j])) for j in range(len(labels))
                  if j != i and labels[j] == labels[i])
        neg = sum(math.exp(w * _cos(e[i], e[j])) for j in range(len(labels)) if labels[j] != labels[i])
        if proxy_negatives:
            neg += sum(math.exp(w * _cos(e[i], W[j])) for j in range(head.num_classes)
                       if j not in labels)
        total += math.log1p(pos * neg)
    return total / len(labels)


def test_registered_and_built_by_name():
    assert HEADS["mask_proxy"] is MaskProxyHead and HEADS["mp"] is MaskProxyHead
    assert HEADS["mmp"] is MultinomialMaskProxyHead and HEADS["multinomial_mask_proxy"] is MultinomialMaskProxyHead
    assert HEADS["mask_proxy_loo"] is LeaveOneOutMaskProxyHead and HEADS["mmp_loo"] is LeaveOneOutMMPHead
    head = build_head("mp", 5, 7, k=3, lam=0.5)
    assert head.k == 3 and head.lam == 0.5
    with pytest.raises(ValueError, match="unknown argument"):
        build_head("mp", 5, 7, margin=0.2)


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_loo_mp_matches_independent_computation(lam):
    torch.manual_seed(0)
    head = LeaveOneOutMaskProxyHead(5, 7, k=3, lam=lam, init_w=4.0, init_b=-1.5)
    x, y = _pk()
    assert _f(head(x, y)) == pytest.approx(_mp_by_hand(head, x, y), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("proxy_negatives", [False, True])
def test_loo_mmp_matches_independent_computation(proxy_negatives):
    torch.manual_seed(1)
    head = LeaveOneOutMMPHead(5, 7, k=3, lam=0.3, init_w=3.0, init_b=-1.0, mmp_weight=0.5,
                              mmp_proxy_negatives=proxy_negatives)
    x, y = _pk()
    expected = _mp_by_hand(head, x, y) + 0.5 * _mult_by_hand(head, x, y, proxy_negatives)
    assert _f(head(x, y)) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_loo_mmp_single_speaker_batch_has_no_entity_negatives():
    head = LeaveOneOutMMPHead(5, 7, k=3, mmp_weight=2.0)
    x, y = _pk(P=1)
    x.requires_grad_(True)
    assert _f(head(x, y)) == pytest.approx(_mp_by_hand(head, x, y), rel=1e-5)
    head(x, y).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_reduces_to_proxy_only_form_when_centroids_are_proxies(lam):
    """Identical utterances per speaker and proxies along them (any positive scale): every
    (leave-one-out) centroid equals its proxy direction, so the masked loss equals the proxy-only
    form, which is (1 + λ)·plain proxy CE here."""
    torch.manual_seed(2)
    head = LeaveOneOutMaskProxyHead(5, 7, k=3, lam=lam, init_w=6.0, init_b=-2.0)
    _, y = _pk()
    with torch.no_grad():
        for c in (1, 4, 6):
            head.weight[c] *= 2.5       # scale must not matter
    x = head.weight.detach()[y] * 0.3
    proxy_ce = F.cross_entropy(head.logits(x), y)
    assert _f(head(x, y)) == pytest.approx((1 + lam) * _f(proxy_ce), rel=1e-5)
    plain = LeaveOneOutMaskProxyHead(5, 7, k=3, lam=lam, init_w=6.0, init_b=-2.0, mask=False)
    plain.load_state_dict(head.state_dict())
    assert _f(plain(x, y)) == pytest.approx(_f(head(x, y)), rel=1e-5)
    # and with distinct utterances the masking does change the loss
    x2, _ = _pk()
    assert abs(_f(plain(x2, y)) - _f(head(x2, y))) > 1e-3


@pytest.mark.parametrize("name", ["mask_proxy_loo", "mmp_loo"])
def test_loo_batch_order_does_not_change_loss(name):
    torch.manual_seed(3)
    head = build_head(name, 5, 7, k=3, lam=0.4)
    x, y = _pk()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(9))
    assert _f(head(x[perm], y[perm])) == pytest.approx(_f(head(x, y)), rel=1e-6)


def test_construction_errors():
    with pytest.raises(ValueError, match="K >= 2"):
        MaskProxyHead(5, 7, k=1)
    with pytest.raises(ValueError, match="K >= 2"):
        build_head("mmp", 5, 7, k=1)
    with pytest.raises(ValueError, match="integer"):
        MaskProxyHead(5, 7, k=2.5)
    with pytest.raises(ValueError, match="lam"):
        MaskProxyHead(5, 7, k=2, lam=-0.1)
    with pytest.raises(ValueError, match="init_w"):
        MaskProxyHead(5, 7, k=2, init_w=0.0)
    with pytest.raises(ValueError, match="mmp_weight"):
        LeaveOneOutMMPHead(5, 7, k=2, mmp_weight=-1)
    with pytest.raises(ValueError, match="unknown argument 'mask'"):
        build_head("mmp", 5, 7, mask=False)       # the official heads have no leave-one-out options


def test_forward_rejects_ungrouped_batch_naming_the_sampler():
    head = MaskProxyHead(5, 7, k=2)
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"label 3 appears 1 time.*pk_batches"):
        head(torch.randn(5, 5), torch.tensor([1, 1, 3, 5, 5]))
    with pytest.raises(ValueError, match="pk_batches"):
        head(torch.randn(3, 5), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="labels must be in"):
        head(x, torch.tensor([1, 1, 7, 7]))
    for h in (head, MultinomialMaskProxyHead(5, 7, k=2)):
        with pytest.raises(ValueError, match="P >= 2 speakers"):
            h(torch.randn(2, 5), torch.tensor([3, 3]))


def test_logits_are_plain_scaled_cosine():
    head = MaskProxyHead(5, 7, k=2, init_w=3.0, init_b=-1.0)
    x = torch.randn(4, 5)
    expected = 3.0 * F.normalize(x, dim=1) @ F.normalize(head.weight.detach(), dim=1).t() - 1.0
    torch.testing.assert_close(head.logits(x).detach(), expected)


@pytest.mark.parametrize("name", ["mp", "mmp", "mask_proxy_loo", "mmp_loo"])
def test_optimizer_steps_reduce_loss(name):
    """Separable embeddings (class means far apart + noise): a few SGD steps on a learned
    linear map + the head reduce the loss; gradients reach W and w. The shared bias b adds the
    same constant to every logit of each softmax, so cross-entropy ignores it: its gradient is 0
    in every head but the official MMP, whose log(1 + Σ exp) terms it shifts."""
    torch.manual_seed(4)
    C, P, K, D = 8, 4, 3, 16
    means = torch.randn(C, D) * 3
    head = build_head(name, D, C, k=K)
    proj = torch.nn.Linear(D, D)
    opt = torch.optim.SGD(list(head.parameters()) + list(proj.parameters()), lr=0.1)
    g = torch.Generator().manual_seed(5)

    def batch():
        labels = torch.randperm(C, generator=g)[:P]
        y = labels.repeat_interleave(K)
        return means[y] + 0.5 * torch.randn(P * K, D, generator=g), y

    fixed = [batch() for _ in range(4)]
    with torch.no_grad():
        before = sum(_f(head(proj(x), y)) for x, y in fixed)
    for _ in range(40):
        x, y = batch()
        opt.zero_grad()
        head(proj(x), y).backward()
        assert head.weight.grad.abs().sum() > 0 and head.w.grad != 0
        assert (abs(float(head.b.grad)) < 1e-5) == (name != "mmp")
        opt.step()
    with torch.no_grad():
        after = sum(_f(head(proj(x), y)) for x, y in fixed)
    assert after < 0.8 * before


# ------------------------------------------------------------------------------- P x K sampler

def _rows(n_labels=10, per_label=7, seed=0):
    import random
    rows = [(lab, f"{lab}-{i}") for lab in range(n_labels) for i in range(per_label)]
    random.Random(seed).shuffle(rows)
    return rows


def test_pk_batches_shape_distinct_labels_and_no_reuse():
    rows = _rows()
    stats = {}
    batches = list(pk_batches(iter(rows), P=3, K=2, seed=1, stats=stats))
    assert batches
    seen = set()
    for b in batches:
        assert len(b) == 6
        labels = [lab for lab, _ in b]
        assert len(set(labels)) == 3 and all(labels.count(lab) == 2 for lab in set(labels))
        assert labels == sorted(labels, key=labels.index)          # grouped label by label
        for lab, s in b:
            assert s.startswith(f"{lab}-") and s not in seen
            seen.add(s)
    assert stats["batches"] == len(batches) and stats["samples"] == len(seen)
    assert stats["samples"] + stats["dropped_samples"] == len(rows)


def test_pk_batches_deterministic_for_a_seed():
    rows = _rows(seed=3)
    a = list(pk_batches(iter(rows), 4, 3, seed=7))
    b = list(pk_batches(iter(rows), 4, 3, seed=7))
    c = list(pk_batches(iter(rows), 4, 3, seed=8))
    assert a == b and a != c


def test_pk_batches_drops_incomplete_groups_and_counts_them():
    # label 0: 5 samples, label 1: 2, label 2: 1 — P=2, K=2
    rows = [(0, "a0"), (1, "b0"), (0, "a1"), (1, "b1"), (0, "a2"), (2, "c0"), (0, "a3"), (0, "a4")]
    stats = {}
    out = list(pk_batches(rows, P=2, K=2, seed=0, stats=stats))
    assert [[lab for lab, _ in b] for b in out] == [[0, 0, 1, 1]] or \
        [[lab for lab, _ in b] for b in out] == [[1, 1, 0, 0]]
    assert stats == {"batches": 1, "samples": 4, "dropped_samples": 4, "dropped_labels": 2}
    # keeping incomplete batches: label 0 still has 3 → one more K-group, label 2's single dropped
    stats = {}
    out = list(pk_batches(rows, P=2, K=2, seed=0, drop_incomplete=False, stats=stats))
    assert len(out) == 2 and [lab for lab, _ in out[1]] == [0, 0]
    assert stats["dropped_samples"] == 2 and stats["dropped_labels"] == 2


def test_pk_batches_feed_the_head():
    """Batches from the sampler satisfy the head's grouping check regardless of shard split."""
    rows = [(lab, torch.randn(6)) for lab, _ in _rows(n_labels=9, per_label=5)]
    head = MaskProxyHead(6, 9, k=2)
    for shard in (rows[0::2], rows[1::2]):                       # two workers' shards
        for b in pk_batches(shard, P=3, K=2, seed=0):
            y = torch.tensor([lab for lab, _ in b])
            x = torch.stack([s for _, s in b])
            assert torch.isfinite(head(x, y))


def test_pk_batches_validates_arguments():
    with pytest.raises(ValueError, match="P must be"):
        list(pk_batches([], P=0, K=2, seed=0))
    with pytest.raises(ValueError, match="K must be"):
        list(pk_batches([], P=2, K=True, seed=0))


def test_centroid_logits_equal_direct_cosines_in_any_batch_order():
    x, y = _pk(P=3, K=4, D=5, C=7)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    x, y = x[perm], y[perm]
    head = build_head("mask_proxy_loo", 5, 7, k=4)
    parts = head._parts(x, y)
    _, got = head.masked_and_centroid_logits(head.proxy_logits(parts.e), head.scale(), parts)
    c = torch.stack([F.normalize(x[y == k], dim=1).mean(0) for k in parts.classes])
    want = head.scale() * F.normalize(c, dim=1) @ F.normalize(head.weight, dim=1).t()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _mp_autograd(head, x, y):
    """MP written with plain autograd ops, one query at a time (the masked proxy matrix built
    row by row), for comparing gradients with the head's fused autograd functions."""
    e = F.normalize(x, dim=1)
    W = F.normalize(head.weight, dim=1)
    w, b = head.w.clamp(min=1e-6), head.b
    labels = [int(v) for v in y]
    classes = sorted(set(labels))
    members = {c: [j for j, lab in enumerate(labels) if lab == c] for c in classes}
    centroid = {c: e[members[c]].mean(0) for c in classes}
    queries = []
    for i, s in enumerate(labels):
        rows = [(e[[m for m in members[j] if m != i]].mean(0) if j == s else centroid[j])
                if head.mask and j in members else W[j] for j in range(head.num_classes)]
        queries.append(w * (F.normalize(torch.stack(rows), dim=1) @ e[i]) + b)
    loss = F.cross_entropy(torch.stack(queries), y)
    cents = torch.stack([F.normalize(centroid[c], dim=0) for c in classes])
    return loss + head.lam * F.cross_entropy(w * cents @ W.t() + b, torch.tensor(classes))


def _mult_autograd(head, x, y):
    """The multinomial term with plain autograd ops, one query at a time."""
    e = F.normalize(x, dim=1)
    w = head.w.clamp(min=1e-6)
    terms = []
    for i in range(len(y)):
        same = y == y[i]
        same[i] = False
        neg = w * (e[y != y[i]] @ e[i])
        if head.mmp_proxy_negatives:
            out = [j for j in range(head.num_classes) if j not in set(y.tolist())]
            neg = torch.cat([neg, w * (F.normalize(head.weight[out], dim=1) @ e[i])])
        terms.append(F.softplus(torch.logsumexp(neg, 0) + torch.logsumexp(-w * (e[same] @ e[i]), 0)))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("name, kw", [("mask_proxy_loo", dict(mask=True)),
                                      ("mask_proxy_loo", dict(mask=False)),
                                      ("mmp_loo", dict(mmp_weight=0.7)),
                                      ("mmp_loo", dict(mmp_weight=0.7, mmp_proxy_negatives=True))])
def test_mask_proxy_gradients_equal_plain_autograd(name, kw):
    x, y = _pk(P=3, K=3, D=5, C=7)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(2))
    x, y = x[order], y[order]
    head = build_head(name, 5, 7, k=3, lam=0.5, **kw)
    gamma = kw.get("mmp_weight")

    def reference(a, b):
        loss = _mp_autograd(head, a, b)
        return loss + gamma * _mult_autograd(head, a, b) if gamma else loss

    params = (head.weight, head.w, head.b)
    grads = []
    for fn in (head, reference):
        xi = x.clone().requires_grad_()
        loss = fn(xi, y)
        grads.append([loss.detach(), *torch.autograd.grad(loss, (xi, *params))])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert float(grads[0][-1]) == 0.0  # b cancels in every softmax


def test_mask_proxy_refuses_a_second_backward_through_one_graph():
    x, y = _pk()
    loss = build_head("mask_proxy_loo", 5, 7, k=3)(x.requires_grad_(), y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward once per forward"):
        loss.backward()


def test_fused_autograd_functions_gradcheck():
    from trainers.heads.mask_proxy import _Gram, _MaskAndPool
    g = torch.Generator().manual_seed(5)
    cos = torch.rand(6, 9, generator=g, dtype=torch.float64).requires_grad_()
    inverse = torch.tensor([0, 1, 2, 2, 0, 1])
    cols = torch.tensor([2, 7, 8])
    values = torch.rand(6, 3, generator=g, dtype=torch.float64).requires_grad_()
    scales = torch.rand(3, generator=g, dtype=torch.float64).add(0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda c, v, sc: _MaskAndPool.apply(c.clone(), inverse, cols, v, sc), (cos, values, scales))
    assert torch.autograd.gradcheck(_Gram.apply, (values,))


# ------------------------------------------- official MP / MMP against the reference's formulas
# jlian2/Masked-Proxy-Loss-for-Text-Indepedent-Speaker-Verification, loss/mp_balance.py (MP_Balance) and
# loss/mmp_balance.py (MMP_Balance2), restated in plain float64 torch. X is (P, K, D): the reference's
# speaker-major batch of L2-normalised embeddings (SpeakerNet normalises before the loss), T the P labels.

def _ref_masked_centers(X, T, proxies, normalize_anchor):
    """Reference centers (C, D): in-batch rows = mean of utterances 1..K−1 (MMP: l2-normalised with
    its sqrt(Σ x² + 1e-12)), other rows = the normalised proxies."""
    anchor = X[:, 1:].mean(1)
    rows = anchor / (anchor.pow(2).sum(1, keepdim=True) + 1e-12).sqrt() if normalize_anchor else anchor
    P_hat = F.normalize(proxies, p=2, dim=1)
    centers = P_hat.clone()
    centers[T] = rows
    return anchor, P_hat, centers


def _ref_mp(X, T, proxies, w, b, lam):
    anchor, P_hat, centers = _ref_masked_centers(X, T, proxies, normalize_anchor=False)
    query = X[:, 0]
    logp = F.log_softmax((query @ centers.t()) * w + b, dim=-1)
    loss = -(F.one_hot(T, proxies.shape[0]).double() * logp).sum(-1).mean()
    reg = F.cross_entropy((anchor @ P_hat[T].t()) * w + b, torch.arange(len(T)))
    return loss + lam * reg


def _ref_mmp(X, T, proxies, w, b, lam):
    """MMP_Balance2; its b enters as w·cos − b (positive pairs: −w·cos + b)."""
    anchor, P_hat, centers = _ref_masked_centers(X, T, proxies, normalize_anchor=True)
    query = X[:, 0]
    others = [j for j in range(proxies.shape[0]) if j not in T.tolist()]
    l1 = torch.log(torch.exp(-(query * centers[T]).sum(1) * w + b).sum() + 1)
    l2 = torch.log(torch.exp((query @ centers[others].t()) * w - b).sum(1) + 1).mean()
    z = torch.exp((query @ centers[T].t()) * w - b)
    l3 = torch.log(z.sum(1) - torch.diag(z) + 1).mean()
    reg = F.cross_entropy((anchor @ P_hat[T].t()) * w - b, torch.arange(len(T)))
    return l1 + l2 + l3 + lam * reg


def _hand_made_pk(seed):
    """P = 3 speakers (labels 5, 0, 2: not sorted) x K = 3 raw embeddings (D = 4), C = 7; speaker-major
    as pk_batches emits them, with a few near-duplicate and opposed utterances."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[1.0, 0.5, -0.2, 0.0], [0.0, 1.0, 0.3, -0.4], [-0.6, 0.1, 1.0, 0.2]])
    X = base[:, None, :] * torch.tensor([1.0, 2.0, 0.7])[None, :, None]
    X = X + 0.4 * torch.randn(3, 3, 4, generator=g)
    X[2, 1] = -X[2, 0]                       # an opposed support utterance
    return X.double(), torch.tensor([5, 0, 2])


@pytest.mark.parametrize("name, ref, b_sign", [("mp", _ref_mp, 1.0), ("mmp", _ref_mmp, -1.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_official_loss_and_gradients_equal_reference(name, ref, b_sign, seed):
    """Loss and gradients (embeddings, proxies, w, b) of `mp` / `mmp` equal the reference's formulas to
    1e-6 on a flat P x K batch laid out as pk_batches emits it (speaker by speaker)."""
    torch.manual_seed(seed)
    head = build_head(name, 4, 7, k=3).double()
    with torch.no_grad():
        head.w.fill_(7.0 + seed)
        head.b.fill_(-2.0 - seed)                   # MMP_Balance2's b is −b here
    X, T = _hand_made_pk(seed)
    x = X.reshape(9, 4).clone().requires_grad_()
    y = T.repeat_interleave(3)
    params = (head.weight, head.w, head.b)
    got = head(x, y)
    g_got = torch.autograd.grad(got, (x, *params))

    x_ref = X.reshape(9, 4).clone().requires_grad_()
    proxies = head.weight.detach().clone().requires_grad_()
    w, b = head.w.detach().clone().requires_grad_(), (b_sign * head.b.detach()).requires_grad_()
    want = ref(F.normalize(x_ref, dim=1).view(3, 3, 4), T, proxies, w, b, 0.5)
    g_want = torch.autograd.grad(want, (x_ref, proxies, w, b))

    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for label, a, e in zip(("x", "proxies", "w", "b"), g_got, (*g_want[:3], b_sign * g_want[3])):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6, msg=f"gradient w.r.t. {label}")


def test_official_defaults_are_the_references():
    for name in ("mp", "mmp"):
        head = build_head(name, 512, 20)
        assert (head.k, head.lam, _f(head.w), _f(head.b)) == (2, 0.5, 10.0, -5.0)
    # kaiming_normal_(fan_out) on (C, D): std sqrt(2 / C); xavier_uniform would give std sqrt(2 / (C + D))
    torch.manual_seed(0)
    std = _f(build_head("mp", 512, 20).weight.std())
    assert std == pytest.approx(math.sqrt(2 / 20), rel=0.05)


def test_official_query_is_each_speakers_first_utterance_in_batch_order():
    """Speaker order does not matter; which utterance comes first within a speaker does (it is the
    query, the rest its support). Interleaved rows use the same first-occurrence rule."""
    head = build_head("mmp", 4, 7, k=3).double()
    X, T = _hand_made_pk(0)
    x, y = X.reshape(9, 4), T.repeat_interleave(3)
    base = _f(head(x, y))
    speakers = torch.tensor([6, 7, 8, 0, 1, 2, 3, 4, 5])
    assert _f(head(x[speakers], y[speakers])) == pytest.approx(base, rel=1e-12)
    interleaved = torch.tensor([0, 3, 6, 1, 4, 7, 2, 5, 8])
    assert _f(head(x[interleaved], y[interleaved])) == pytest.approx(base, rel=1e-12)
    swapped = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7, 8])
    assert abs(_f(head(x[swapped], y[swapped])) - base) > 1e-3
    X_swapped = X.clone()
    X_swapped[0] = X[0, [1, 0, 2]]               # speaker 5's query is now its second utterance
    for name, ref in (("mp", _ref_mp), ("mmp", _ref_mmp)):
        head = build_head(name, 4, 7, k=3).double()
        want = ref(F.normalize(X_swapped, dim=2), T, head.weight.detach(), 10.0, 5.0 if name == "mmp"
                   else -5.0, 0.5)
        assert _f(head(x[swapped], y[swapped])) == pytest.approx(float(want), rel=1e-9)


def test_official_heads_on_pk_batches_equal_the_reference():
    """The layout the loss assumes is the one pk_batches produces: a batch from the sampler, reshaped
    speaker-major to (P, K, D), is the reference's X."""
    g = torch.Generator().manual_seed(3)
    rows = [(lab, torch.randn(4, generator=g, dtype=torch.float64)) for lab, _ in _rows(n_labels=7, per_label=4)]
    batch = next(pk_batches(rows, P=3, K=3, seed=0))
    y = torch.tensor([lab for lab, _ in batch])
    x = torch.stack([s for _, s in batch])
    T = y[::3]
    assert torch.equal(y, T.repeat_interleave(3))
    for name, ref, b in (("mp", _ref_mp, -5.0), ("mmp", _ref_mmp, 5.0)):
        head = build_head(name, 4, 7, k=3).double()
        want = ref(F.normalize(x, dim=1).view(3, 3, 4), T, head.weight.detach(), 10.0, b, 0.5)
        assert _f(head(x, y)) == pytest.approx(float(want), rel=1e-9)


def test_loo_variants_keep_their_own_names_and_behaviour():
    """This project's former definitions live on as mask_proxy_loo / mmp_loo, with their keywords and
    defaults, and differ from the official losses on the same batch and proxies."""
    torch.manual_seed(6)
    x, y = _pk()
    loo = build_head("mask_proxy_loo", 5, 7, k=3, mask=True)
    assert isinstance(loo, LeaveOneOutMaskProxyHead) and loo.lam == 1.0
    assert _f(loo(x, y)) == pytest.approx(_mp_by_hand(loo, x, y), rel=1e-5, abs=1e-6)
    mmp = build_head("mmp_loo", 5, 7, k=3, mmp_weight=0.5, mmp_proxy_negatives=True)
    mmp.load_state_dict(loo.state_dict(), strict=False)
    expected = _mp_by_hand(mmp, x, y) + 0.5 * _mult_by_hand(mmp, x, y, proxy_negatives=True)
    assert _f(mmp(x, y)) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    official = build_head("mp", 5, 7, k=3, lam=1.0)
    official.load_state_dict(loo.state_dict())
    assert abs(_f(official(x, y)) - _f(loo(x, y))) > 1e-3
