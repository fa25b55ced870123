"""CosFace, SphereFace (A-Softmax), SphereFace-R and SphereFace2 heads (OpenSphere / WeSpeaker formulas).

Expected values are computed here from the angles with `math`, independently of the heads' code:
2-D heads whose class weights sit at known angles, x at known angles and norms.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.embedding import EmbeddingModel
from trainers.heads import HEADS, build_head
from trainers.heads.sphereface import SphereFaceRHead

W_DEG = [0.0, 90.0, 215.0]          # class weight directions (class 2 scaled by 3; not antipodal
#                                     to any x: acos is ill-conditioned in float32 at cos = −1)
X_DEG = [20.0, 50.0, 100.0, 170.0]  # x directions; target class 0 → θ_y = the x angle
NORMS = [2.0, 3.0, 4.0, 5.0]


def _unit(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


def _angle(a, b):
    """Angle in [0, π] between directions a and b (degrees) — in radians."""
    d = abs(a - b) % 360.0
    return math.radians(min(d, 360.0 - d))


def _setup(name, **kw):
    head = build_head(name, 2, 3, **kw)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([_unit(0), _unit(90), [3 * v for v in _unit(W_DEG[2])]]))
    x = torch.tensor([[n * v for v in _unit(a)] for n, a in zip(NORMS, X_DEG)])
    return head, x, torch.zeros(len(X_DEG), dtype=torch.long)


def _thetas():
    return [[_angle(a, w) for w in W_DEG] for a in X_DEG]


def _psi_v0(theta, m):
    k = math.floor(m * theta / math.pi)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def _psi_v1(theta, m):
    return math.cos(min(max(m * theta, 1e-5), math.pi))


def _close(got, rows, atol=2e-4):
    torch.testing.assert_close(got.detach().double(), torch.tensor(rows, dtype=torch.float64),
                               rtol=0, atol=atol)


# ----------------------------------------------------------------------------- CosFace

def test_cosface_logits_loss_and_alias():
    head, x, y = _setup("cosface", s=30.0, m=0.35)
    assert HEADS["am"] is HEADS["cosface"]
    rows = [[30 * (math.cos(t[0]) - 0.35), 30 * math.cos(t[1]), 30 * math.cos(t[2])]
            for t in _thetas()]
    got = head.logits(x, y)
    _close(got, rows)
    torch.testing.assert_close(head(x, y), F.cross_entropy(got, y))
    _close(head.logits(x), [[30 * math.cos(v) for v in t] for t in _thetas()])
    d = build_head("am", 8, 4)
    assert d.s == 32.0 and d.margin == 0.2
    d.set_margin(0.1)
    assert d.margin == 0.1


# ----------------------------------------------------------------------------- SphereFace

def _lambda(it, base=1000.0, gamma=0.12, power=1.0, lmin=5.0):
    return max(lmin, base * (1 + gamma * it) ** (-power))


def test_sphereface_a_softmax_logits_and_lambda_annealing():
    head, x, y = _setup("sphereface")
    assert head.m == 4 and head.iter == 0
    head.eval()
    head(x, y)
    assert head.iter == 0  # only training-mode forwards advance the counter
    head.train()
    for _ in range(7):
        head(x, y)
    assert head.iter == 7
    lam = _lambda(7)
    assert head.lamb == pytest.approx(lam)
    rows = []
    for n, t in zip(NORMS, _thetas()):
        target = (lam * math.cos(t[0]) + _psi_v0(t[0], 4)) / (1 + lam)
        rows.append([n * target, n * math.cos(t[1]), n * math.cos(t[2])])
    _close(head.logits(x, y), rows, atol=1e-3)
    _close(head.logits(x), [[n * math.cos(v) for v in t] for n, t in zip(NORMS, _thetas())])
    loss = head(x, y)  # iter 8 now
    assert head.iter == 8
    torch.testing.assert_close(loss, F.cross_entropy(head.logits(x, y), y))
    head.iter = 10 ** 6
    assert head.lamb == 5.0  # floor at lambda_min
    # iter survives a checkpoint round trip
    other = build_head("sphereface", 2, 3)
    other.load_state_dict(head.state_dict())
    assert other.iter == 10 ** 6


def test_sphereface_gradient_finite_at_cos_one_and_matches_psi_derivative():
    head = build_head("sphereface", 4, 3, lambda_min=0.0, base=0.0)  # λ = 0: target ‖x‖·ψ
    x = head.weight.detach()[[0]].clone().requires_grad_()
    head(x, torch.tensor([0])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    # dψ/dcos at θ = 100°: ψ = (−1)^k cos 4θ − 2k, dψ/dθ = −(−1)^k 4 sin 4θ, dθ/dcos = −1/sin θ
    th = math.radians(100)
    cos = torch.tensor([[math.cos(th)]], dtype=torch.float64, requires_grad=True)
    head.psi(cos).sum().backward()
    k = math.floor(4 * th / math.pi)
    expect = (-1) ** k * 4 * math.sin(4 * th) / math.sin(th)
    assert cos.grad.item() == pytest.approx(expect, rel=1e-6)


# ----------------------------------------------------------------------------- SphereFace-R

def _r_margined(theta_row, magnitude, m):
    ty, *others = theta_row
    if magnitude == "v0":
        return [_psi_v0(ty, m)] + [math.cos(t) for t in others]
    if magnitude == "v1":
        return [_psi_v1(ty, m)] + [math.cos(t) for t in others]
    return [math.cos(ty)] + [math.cos(t / m) for t in others]


@pytest.mark.parametrize("magnitude, fn", list(itertools.product(("v0", "v1", "v2"),
                                                                 ("hfn", "none", "sfn"))))
def test_spherefacer_logits_and_loss_at_known_angles(magnitude, fn):
    s, m, lw, t = 20.0, 1.7, 3.0, 0.05
    head, x, y = _setup("spherefacer", magnitude=magnitude, fn=fn, s=s, m=m, lw=lw, t=t)
    rows = []
    for n, th in zip(NORMS, _thetas()):
        scale = s if fn == "hfn" else n
        rows.append([scale * c for c in _r_margined(th, magnitude, m)])
    got = head.logits(x, y)
    _close(got, rows, atol=5e-4)
    expected = torch.tensor(rows, dtype=torch.float64)
    ce = F.cross_entropy(expected, y).item()
    want = {"hfn": lw * ce / s, "none": lw * ce,
            "sfn": lw * ce / s + t * sum(abs(n - s) for n in NORMS) / len(NORMS)}[fn]
    assert head(x, y).item() == pytest.approx(want, rel=1e-4)
    scale = torch.full((4, 1), s) if fn == "hfn" else torch.tensor(NORMS).view(-1, 1)
    _close(head.logits(x), (scale * torch.tensor(_thetas()).cos()).tolist())


def test_sphereface_v0_k_branches():
    """m=1.5: θ=170° gives mθ=255° → k=1, ψ = −cos(mθ) − 2 (below −1, monotone)."""
    head, x, y = _setup("spherefacer", magnitude="v0", fn="hfn", s=1.0, m=1.5)
    got = head.logits(x, y)[:, 0]
    for g, th in zip(got.tolist(), _thetas()):
        assert g == pytest.approx(_psi_v0(th[0], 1.5), abs=2e-4)
    assert got[3].item() == pytest.approx(-math.cos(math.radians(255)) - 2, abs=2e-4)


@pytest.mark.parametrize("magnitude, fn", list(itertools.product(("v0", "v1", "v2"),
                                                                 ("hfn", "none", "sfn"))))
def test_spherefacer_cgd_gradient_is_cosine_path(magnitude, fn):
    torch.manual_seed(1)
    cgd = build_head("spherefacer", 8, 5, magnitude=magnitude, fn=fn, m=1.6, s=10.0, lw=2.0)
    full = build_head("spherefacer", 8, 5, magnitude=magnitude, fn=fn, m=1.6, s=10.0, lw=2.0,
                      cgd=False)
    full.load_state_dict(cgd.state_dict())
    x, y = torch.randn(6, 8) * 3, torch.randint(0, 5, (6,))
    x1, x2, x3 = (x.clone().requires_grad_() for _ in range(3))
    l_cgd, l_full = cgd(x1, y), full(x2, y)
    torch.testing.assert_close(l_cgd, l_full)  # same value: the forward carries ψ(θ)
    l_cgd.backward()
    l_full.backward()
    # reference: the same loss with the margin term as a constant, gradient only via cos θ
    with torch.no_grad():
        cos = F.normalize(x, dim=1) @ F.normalize(cgd.weight, dim=1).T
        rows = [_r_margined([math.acos(max(-1.0, min(1.0, c))) for c in
                             [r[yy]] + [r[j] for j in range(5) if j != yy]], magnitude, 1.6)
                for r, yy in zip(cos.tolist(), y.tolist())]
        marg = torch.empty(6, 5)
        for i, (r, yy) in enumerate(zip(rows, y.tolist())):
            order = [yy] + [j for j in range(5) if j != yy]
            for j, v in zip(order, r):
                marg[i, j] = v
        d = marg - cos
    c3 = F.normalize(x3, dim=1) @ F.normalize(cgd.weight.detach(), dim=1).T
    norm = x3.norm(dim=1, keepdim=True)
    scale = 10.0 if fn == "hfn" else norm
    ce = F.cross_entropy(scale * (c3 + d), y)
    ref = {"hfn": 2.0 * ce / 10.0, "none": 2.0 * ce,
           "sfn": 2.0 * ce / 10.0 + 0.01 * (norm - 10.0).abs().mean()}[fn]
    ref.backward()
    torch.testing.assert_close(x1.grad, x3.grad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(x1.grad, x2.grad, atol=1e-6)  # ψ's own gradient differs


def test_spherefacer_on_lr_step_and_state():
    head = build_head("spherefacer", 8, 4, fn="none", m=1.2, dm=0.1)
    assert head.on_lr_step() == pytest.approx(1.3) and head.m == pytest.approx(1.3)
    head.on_lr_step()
    other = build_head("spherefacer", 8, 4, fn="none", m=1.2)
    other.load_state_dict(head.state_dict())
    assert other.m == pytest.approx(1.4)
    fixed = build_head("spherefacer", 8, 4, fn="hfn", m=1.2)
    assert fixed.on_lr_step() == 1.2  # m only grows without feature normalization


def test_sphereface_detached_is_spherefacer_preset():
    det = build_head("sphereface_detached", 16, 6)
    assert isinstance(det, SphereFaceRHead)
    assert (det.magnitude, det.fn, det.cgd, det.s, det.m) == ("v0", "hfn", True, 30.0, 1.5)
    # plain CE: SphereFace-R's HFN loss lw·CE/s with lw = s
    ref = build_head("spherefacer", 16, 6, magnitude="v0", fn="hfn", s=30.0, m=1.5, lw=30.0)
    ref.load_state_dict(det.state_dict())
    x, y = torch.randn(5, 16), torch.randint(0, 6, (5,))
    torch.testing.assert_close(det(x, y), ref(x, y))


# ----------------------------------------------------------------------------- SphereFace2

def _g(z, t):
    return 2 * ((z + 1) / 2) ** t - 1


def _sf2_margined(theta_row, mtype, m, t):
    ty, *others = theta_row
    neg = [_g(math.cos(v), t) + (m if mtype == "C" else 0.0) for v in others]
    if mtype == "C":
        pos = _g(math.cos(ty), t) - m
    elif mtype == "A":
        pos = _g(math.cos(min(ty + m, math.pi)), t)
    else:
        pos = _g(math.cos(min(max(m * ty, 1e-5), math.pi)), t)
    return [pos] + neg


def _sf2_margined_torch(cos, y, mtype, m, t):
    """The margined g of a (B, K) cosine tensor with plain differentiable ops."""
    def g(v):
        return 2 * ((v.clamp(-1, 1) + 1) / 2) ** t - 1
    onehot = F.one_hot(y, cos.shape[1]).bool()
    if mtype == "C":
        return g(cos) + m - 2 * m * onehot
    th = torch.acos(cos.gather(1, y[:, None]).clamp(-1, 1))
    cm = torch.cos((th + m).clamp(max=math.pi)) if mtype == "A" else \
        torch.cos((m * th).clamp(1e-5, math.pi))
    return torch.where(onehot, g(cm), g(cos))


def _sf2_init_logits(mtype, lam, r, m, t, K):
    """(a_y, a_i): margined target / non-target logits without b when every cos θ = 0."""
    g0 = _g(0.0, t)
    if mtype == "C":
        ay, ai = r * (g0 - m), r * (g0 + m)
    elif mtype == "A":
        ay, ai = r * _g(math.cos(min(math.pi / 2 + m, math.pi)), t), r * g0
    else:
        ay, ai = r * _g(math.cos(min(m * math.pi / 2, math.pi)), t), r * g0
    return ay, ai


def _closed_form_bias(ay, ai, lam, K):
    """The bias-init formula as written (ill-conditioned when z > 1 and e^(a_y − a_i) is tiny)."""
    z = lam / ((1 - lam) * (K - 1))
    return (math.log(2 * z) - ai
            - math.log(1 - z + math.sqrt((1 - z) ** 2 + 4 * z * math.exp(ay - ai))))


def _balance_root(ay, ai, lam, K):
    """b with λ·σ(−(a_y + b)) = (1−λ)(K−1)·σ(a_i + b), by bisection (the left side falls and the
    right side rises with b), in float64 — independent of the closed form."""
    def f(b):
        return lam / (1 + math.exp(min(700.0, ay + b))) - \
            (1 - lam) * (K - 1) / (1 + math.exp(min(700.0, -(ai + b))))
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def test_sphereface2_closed_form_bias_is_the_balance_root():
    for mtype, m, lam, K, r in [("C", 0.4, 0.7, 6000, 40.0), ("C", 0.2, 0.7, 1211, 32.0),
                                ("A", 0.15, 0.7, 100, 32.0), ("M", 1.5, 0.7, 10, 40.0),
                                ("C", 0.4, 0.7, 3, 40.0), ("C", 0.4, 0.9, 2, 64.0)]:
        ay, ai = _sf2_init_logits(mtype, lam, r, m, 3.0, K)
        root = _balance_root(ay, ai, lam, K)
        head = build_head("sphereface2", 4, K, margin_type=mtype, m=m, lam=lam, r=r)
        assert head.init_bias() == pytest.approx(root, abs=1e-6)
        if lam / ((1 - lam) * (K - 1)) < 1:  # well-conditioned: the formula as written
            assert _closed_form_bias(ay, ai, lam, K) == pytest.approx(root, abs=1e-6)


@pytest.mark.parametrize("mtype, m", [("C", 0.4), ("A", 0.3), ("M", 1.5)])
def test_sphereface2_logits_loss_at_known_angles(mtype, m):
    lam, r, t, lw = 0.7, 40.0, 3.0, 50.0
    head, x, y = _setup("sphereface2", margin_type=mtype, m=m)
    b = _balance_root(*_sf2_init_logits(mtype, lam, r, m, t, 3), lam, 3)
    assert head.bias.item() == pytest.approx(b, rel=1e-5, abs=1e-4)
    rows = [[r * v + b for v in _sf2_margined(th, mtype, m, t)] for th in _thetas()]
    got = head.logits(x, y)
    _close(got, rows, atol=2e-3)
    # the BCEWithLogits definition (float64, built from the independent logits)
    z = torch.tensor(rows, dtype=torch.float64)
    onehot = F.one_hot(y, 3).double()
    weight = lw * 3 / r * (lam * onehot + (1 - lam) * (1 - onehot))
    want = F.binary_cross_entropy_with_logits(z, onehot, weight=weight)
    assert head(x, y).item() == pytest.approx(want.item(), rel=1e-4)
    _close(head.logits(x), [[math.cos(v) for v in th] for th in _thetas()])  # scoring: cos θ


@pytest.mark.parametrize("mtype", ["C", "A", "M"])
def test_sphereface2_detached_gradient_is_cosine_path(mtype):
    torch.manual_seed(2)
    det = build_head("sphereface2", 8, 5, margin_type=mtype)
    full = build_head("sphereface2", 8, 5, margin_type=mtype, detach=False)
    full.load_state_dict(det.state_dict())
    x, y = torch.randn(6, 8), torch.randint(0, 5, (6,))
    x1, x2, x3 = (x.clone().requires_grad_() for _ in range(3))
    l_det, l_full = det(x1, y), full(x2, y)
    torch.testing.assert_close(l_det, l_full)
    l_det.backward()
    l_full.backward()
    with torch.no_grad():
        cos = F.normalize(x, dim=1) @ F.normalize(det.weight, dim=1).T
        marg = torch.empty(6, 5)
        for i, (row, yy) in enumerate(zip(cos.tolist(), y.tolist())):
            order = [yy] + [j for j in range(5) if j != yy]
            th = [math.acos(max(-1.0, min(1.0, row[j]))) for j in order]
            for j, v in zip(order, _sf2_margined(th, mtype, det.m, 3.0)):
                marg[i, j] = v
        d = marg - cos
    c3 = F.normalize(x3, dim=1) @ F.normalize(det.weight.detach(), dim=1).T
    z = det.r * (c3 + d) + det.bias.detach()
    onehot = F.one_hot(y, 5).float()
    w = 50.0 * 5 / det.r * (0.7 * onehot + 0.3 * (1 - onehot))
    F.binary_cross_entropy_with_logits(z, onehot, weight=w).backward()
    torch.testing.assert_close(x1.grad, x3.grad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(x1.grad, x2.grad, atol=1e-6)
    # detach=False: the gradient of the margined g itself, by plain autograd (float64)
    x4 = x.double().requires_grad_()
    c4 = F.normalize(x4, dim=1) @ F.normalize(det.weight.detach().double(), dim=1).T
    z4 = det.r * _sf2_margined_torch(c4, y, mtype, det.m, 3.0) + det.bias.detach().double()
    F.binary_cross_entropy_with_logits(z4, onehot.double(), weight=w.double()).backward()
    torch.testing.assert_close(x2.grad, x4.grad.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mtype, K, lam", [("C", 10, 0.7), ("C", 1000, 0.7), ("A", 50, 0.6),
                                           ("M", 50, 0.7), ("C", 2, 0.9)])
def test_sphereface2_bias_init_balances_positive_and_negative_terms(mtype, K, lam):
    """With cos θ = 0 for every class (features orthogonal to all weights at init), the closed-form
    b solves λ·σ(−(a_y + b)) = (1−λ)(K−1)·σ(a_i + b): the λ-weighted positive term and the K−1
    (1−λ)-weighted negative terms pull on b (and on every logit shift) with equal and opposite
    force, so the initial loss is at its minimum in b and ∂L/∂b = 0."""
    head = build_head("sphereface2", K + 1, K, margin_type=mtype, lam=lam)
    with torch.no_grad():
        head.weight.copy_(torch.eye(K + 1)[:K])
    x = torch.zeros(4, K + 1, dtype=torch.float32)
    x[:, K] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # orthogonal to every class weight
    y = torch.tensor([0, 1, K - 1, 0])
    z = head.logits(x, y).double()
    b = head.bias.item()
    a_y, a_i = z[0, 0].item() - b, z[0, 1].item() - b
    pos = lam * torch.sigmoid(torch.tensor(-(a_y + b), dtype=torch.float64)).item()
    neg = (1 - lam) * (K - 1) * torch.sigmoid(torch.tensor(a_i + b, dtype=torch.float64)).item()
    assert pos == pytest.approx(neg, rel=1e-4)
    head(x, y).backward()
    assert abs(head.bias.grad.item()) < 1e-4
    base = head(x, y).item()
    for delta in (-0.5, 0.5):
        with torch.no_grad():
            head.bias += delta
        assert head(x, y).item() > base
        with torch.no_grad():
            head.bias -= delta


@pytest.mark.parametrize("mtype, detach, r", list(itertools.product(("C", "A", "M"),
                                                                    (True, False), (16, 40, 64))))
def test_sphereface2_finite_float32_at_cos_pm_one(mtype, detach, r):
    head = build_head("sphereface2", 6, 4, margin_type=mtype, r=r, detach=detach)
    w = head.weight.detach()
    x = torch.cat([w[[0]], -w[[0]], 5 * w[[1]], -w[[3]]]).clone().requires_grad_()
    y = torch.tensor([0, 0, 2, 3])  # cos_y = 1, −1, and a non-target at cos = 1
    loss = head(x, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    assert torch.isfinite(head.bias.grad).all() and math.isfinite(head.bias.item())


def test_sphereface2_bias_init_large_r_no_overflow():
    for mtype, m in (("C", 0.4), ("A", 0.4), ("M", 4.0)):
        assert math.isfinite(build_head("sphereface2", 8, 6000, margin_type=mtype, r=500.0,
                                        m=m).bias.item())


@pytest.mark.parametrize("name, kw", [("spherefacer", dict(magnitude=v, cgd=c))
                                      for v in ("v0", "v1", "v2") for c in (True, False)]
                         + [("sphereface", {}), ("sphereface_detached", {}), ("cosface", {})])
def test_spherefacer_family_finite_at_cos_pm_one(name, kw):
    head = build_head(name, 6, 4, **kw)
    w = head.weight.detach()
    x = torch.cat([w[[0]], -w[[0]], 5 * w[[1]]]).clone().requires_grad_()
    loss = head(x, torch.tensor([0, 0, 2]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- config errors

@pytest.mark.parametrize("name, kw, match", [
    ("sphereface", dict(m=0), "sphereface m"), ("sphereface", dict(m=2.5), "integer"),
    ("sphereface", dict(gamma=-1), "gamma"),
    ("spherefacer", dict(m=0), "m"), ("spherefacer", dict(m=-1.5), "m"),
    ("spherefacer", dict(magnitude="v3"), "magnitude"), ("spherefacer", dict(fn="soft"), "fn"),
    ("spherefacer", dict(s=0), "s must"), ("spherefacer", dict(lw=0), "lw"),
    ("spherefacer", dict(t=-1), "t must"),
    ("sphereface_detached", dict(m=0), "m"), ("sphereface_detached", dict(magnitude="v1"),
                                              "unknown argument 'magnitude'"),
    ("sphereface2", dict(m=0), "margin m"), ("sphereface2", dict(m=-0.2), "margin m"),
    ("sphereface2", dict(margin_type="M", m=0.5), "M margin"),
    ("sphereface2", dict(lam=0), "lam"), ("sphereface2", dict(lam=1.0), "lam"),
    ("sphereface2", dict(lam=1.5), "lam"), ("sphereface2", dict(t=0.5), "t must"),
    ("sphereface2", dict(r=0), "r must"), ("sphereface2", dict(margin_type="B"), "margin_type"),
    ("sphereface2", dict(alpha=0.7), "unknown argument 'alpha'"),
    ("cosface", dict(m=-0.1), "margin"), ("cosface", dict(s=0), "s must"),
])
def test_build_head_config_errors(name, kw, match):
    with pytest.raises(ValueError, match=match):
        build_head(name, 8, 4, **kw)


def test_new_heads_registered():
    for name in ("cosface", "am", "sphereface", "sphereface_detached", "spherefacer",
                 "sphereface2"):
        assert name in HEADS


# ----------------------------------------------------------------------------- in EmbeddingModel

@pytest.mark.parametrize("name, kw", [
    ("cosface", {}), ("sphereface", {}), ("sphereface_detached", {}),
    ("spherefacer", dict(magnitude="v0", fn="hfn", lw=30.0)),
    ("spherefacer", dict(magnitude="v1", fn="none")),
    ("spherefacer", dict(magnitude="v2", fn="sfn", lw=30.0)),
    ("sphereface2", dict(margin_type="C")), ("sphereface2", dict(margin_type="A")),
    ("sphereface2", dict(margin_type="M")),
])
def test_heads_train_inside_speaker_model(name, kw):
    torch.manual_seed(0)
    K, D, F_IN = 6, 16, 20
    centers = torch.randn(K, F_IN) * 3
    labels = torch.arange(K).repeat(16)
    feats = centers[labels] + 0.3 * torch.randn(len(labels), F_IN)
    model = EmbeddingModel(torch.nn.Linear(F_IN, D), build_head(name, D, K, **kw))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        loss, correct, n = model(feats, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert n == len(labels) and 0 <= int(correct) <= n
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert int(correct) == n  # separable: every training embedding right by the end


@pytest.mark.parametrize("name, kw", [("cosface", {}), ("sphereface", {}),
                                      ("spherefacer", dict(magnitude="v2", fn="sfn")),
                                      ("sphereface2", dict(margin_type="A"))])
def test_new_heads_float32_under_autocast(name, kw):
    torch.manual_seed(3)
    head = build_head(name, 8, 4, **kw).eval()
    x, y = torch.randn(3, 8), torch.tensor([0, 1, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = head.logits(x, y), head(x, y)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(logits, head.logits(x, y))
