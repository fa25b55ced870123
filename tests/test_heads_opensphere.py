"""SphereFace-R (H, N, S) and the detached SphereFace against OpenSphere (ydwen/opensphere, commit
310d889: model/head/spherefacer.py, model/head/sphereface.py, config/train/vggface2_sfnet20_spherefacer.yml).

The reference below re-derives those heads' formulas in float64 from hand-made inputs, without our
heads' code: class weights stored (D, K) and renormalized per column before the loss, cos θ = x·w/‖x‖,
d_θ under no_grad on every column (the target angle multiplied by m), and the loss of each head.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.heads import build_head, head_defaults

# 3-d features and 5 class weights (rows; not unit: the heads renormalize them). No non-target
# |cos θ| is near 1, and targets span small to obtuse angles (v0's k = 0, 1, 2 branches with m ≥ 1.4).
X = [[2.0, 0.5, -1.0], [-1.5, 2.5, 0.3], [0.2, -0.4, 3.0], [-2.0, -1.0, -0.5]]
W = [[1.0, 0.2, 0.1], [0.3, -1.2, 0.4], [-0.5, 0.9, 0.8], [0.7, 0.7, -0.9], [0.1, 0.3, -2.0]]
Y = [0, 2, 4, 1]


def _ref_d_theta(cos, y, magn, m):
    """OpenSphere's d_θ for every column: θ = acos(cos clamped to ±(1 − 1e-5)), the target's θ times m."""
    theta = torch.acos(cos.clamp(-1 + 1e-5, 1 - 1e-5))
    mult = torch.ones_like(theta)
    mult[torch.arange(len(y)), y] = m
    m_theta = theta * mult
    if magn == "v0":
        k = torch.floor(m_theta / math.pi)
        return (1 - 2 * torch.remainder(k, 2)) * torch.cos(m_theta) - 2 * k - cos
    if magn == "v1":
        return torch.cos(m_theta.clamp(1e-5, 3.14159)) - cos
    return torch.cos(m_theta / m) - cos


def _reference(head, magn, m, s=None, lw=None, t=None, cgd=True):
    """(loss, dL/dx, dL/dW as (K, D)) of OpenSphere's head `head` (H, N, S or SphereFace), float64;
    cgd=False (our option, not OpenSphere's) lets the gradient flow through d_θ."""
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    w = F.normalize(torch.tensor(W, dtype=torch.float64).t(), dim=0).requires_grad_()  # (D, K)
    y = torch.tensor(Y)
    magnitude = x.norm(dim=1, keepdim=True)
    cos = x.mm(w) / magnitude
    with torch.set_grad_enabled(not cgd):
        d = _ref_d_theta(cos, y, magn, m)
    if head == "H":
        loss = lw * F.cross_entropy(s * (cos + d), y) / s
    elif head == "N":
        loss = lw * F.cross_entropy(magnitude * (cos + d), y)
    elif head == "S":
        loss = lw * F.cross_entropy(magnitude * (cos + d), y) / s + (t * (magnitude - s).abs()).mean()
    else:  # SphereFace: plain CE
        loss = F.cross_entropy(s * (cos + d), y)
    loss.backward()
    return loss.detach(), x.grad, w.grad.t()


def _ours(name, steps=0, **kw):
    head = build_head(name, 3, 5, **kw)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(W))
    for _ in range(steps):
        head.on_lr_step()
    x = torch.tensor(X, requires_grad=True)
    loss = head(x, torch.tensor(Y))
    loss.backward()
    return head, loss.detach(), x.grad, head.weight.grad


def _assert_matches(ours, ref, rtol=2e-6):
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("magn", ["v0", "v1", "v2"])
def test_hfn_equals_opensphere_shipped_config(magn):
    """Defaults: SphereFaceR_H with its config's s=60, m=1.4, lw=50 (v2 unless another is asked)."""
    head, *ours = _ours("spherefacer", magnitude=magn)
    assert (head.fn, head.s, head.m, head.lw) == ("hfn", 60.0, 1.4, 50.0)
    _assert_matches(ours, _reference("H", magn, 1.4, s=60.0, lw=50.0))


@pytest.mark.parametrize("magn", ["v0", "v1", "v2"])
@pytest.mark.parametrize("steps", [0, 1, 2])
def test_no_fn_equals_opensphere_with_m_grown(magn, steps):
    """SphereFaceR_N: lw=1, m = 1 + 0.1·n_step."""
    head, *ours = _ours("spherefacer", steps, fn="none", magnitude=magn)
    assert head.m == pytest.approx(1 + 0.1 * steps)
    _assert_matches(ours, _reference("N", magn, 1 + 0.1 * steps, lw=1.0))


@pytest.mark.parametrize("magn", ["v0", "v1", "v2"])
@pytest.mark.parametrize("steps", [0, 1, 2])
def test_sfn_equals_opensphere_with_m_grown(magn, steps):
    """SphereFaceR_S: s=30, t=0.01, lw=50, m = 1 + 1.5·n_step."""
    head, *ours = _ours("spherefacer", steps, fn="sfn", magnitude=magn)
    assert head.m == pytest.approx(1 + 1.5 * steps)
    _assert_matches(ours, _reference("S", magn, 1 + 1.5 * steps, s=30.0, lw=50.0, t=0.01))


@pytest.mark.parametrize("magn", ["v0", "v1", "v2"])
@pytest.mark.parametrize("fn, head, kw", [("hfn", "H", dict(s=60.0, lw=50.0)), ("none", "N", dict(lw=1.0)),
                                          ("sfn", "S", dict(s=30.0, lw=50.0, t=0.01))])
def test_without_cgd_the_gradient_goes_through_d_theta(magn, fn, head, kw):
    _, *ours = _ours("spherefacer", 1, fn=fn, magnitude=magn, cgd=False)
    m = {"hfn": 1.4, "none": 1.1, "sfn": 2.5}[fn]
    # float32 vs float64: ψ's slope m·sin(mθ)/sin θ at θ_y = 173° amplifies rounding
    _assert_matches(ours, _reference(head, magn, m, cgd=False, **kw), rtol=1e-5)


def test_detached_equals_opensphere_sphereface():
    """OpenSphere's SphereFace: CE(30·(cos θ + d_θ)) with v0's ψ at m=1.5, no lw/s factor."""
    head, *ours = _ours("sphereface_detached")
    assert (head.s, head.m) == (30.0, 1.5)
    _assert_matches(ours, _reference("SphereFace", "v0", 1.5, s=30.0))


def test_defaults_per_feature_normalization():
    """Unset arguments take OpenSphere's values for the chosen fn, and the resolved config records them."""
    want = {"hfn": ("v2", 60.0, 1.4, 50.0, 0.0), "none": ("v0", 30.0, 1.0, 1.0, 0.1),
            "sfn": ("v0", 30.0, 1.0, 50.0, 1.5)}
    for fn, (magn, s, m, lw, dm) in want.items():
        head = build_head("spherefacer", 8, 4, fn=fn)
        assert (head.magnitude, head.s, head.m, head.lw, head.dm, head.t) == (magn, s, m, lw, dm, 0.01)
        assert head.cgd and head.renorm
        resolved = head_defaults({"name": "spherefacer", "fn": fn})
        assert (resolved["magnitude"], resolved["s"], resolved["m"], resolved["lw"], resolved["dm"]) == \
            (magn, s, m, lw, dm)
    assert head_defaults({"name": "sphereface_detached"}) == \
        {"name": "sphereface_detached", "s": 30.0, "m": 1.5, "renorm": True}


def test_m_grows_at_lr_steps_as_opensphere_counts_iterations():
    """OpenSphere: m = 1 + dm·#{step in steps : step < iter}, iter counting forwards from 1. Our trainer
    calls on_lr_step() at the start of each milestone epoch: with steps at milestone·(iterations per
    epoch) both give the same m at every iteration. HFN keeps m fixed; n_step is checkpointed."""
    milestones, per_epoch = [2, 4, 5], 3
    steps = [e * per_epoch for e in milestones]
    for fn, dm in (("none", 0.1), ("sfn", 1.5)):
        head, it = build_head("spherefacer", 8, 4, fn=fn), 0
        for epoch in range(7):
            if epoch in milestones:
                head.on_lr_step()
            for _ in range(per_epoch):
                it += 1
                assert head.m == pytest.approx(1 + dm * sum(step < it for step in steps))
        other = build_head("spherefacer", 8, 4, fn=fn)
        other.load_state_dict(head.state_dict())
        assert other.n_step == 3 and other.m == pytest.approx(1 + 3 * dm)
    hfn = build_head("spherefacer", 8, 4)
    assert hfn.on_lr_step() == 1.4 and hfn.m == 1.4


def test_renorm_option():
    """renorm=True (OpenSphere): xavier_normal init, rows unit after each forward, W's gradient not
    projected; renorm=False keeps W as given and normalizes it inside the cosine (projected gradient)."""
    torch.manual_seed(0)
    K, D = 2000, 64
    bound = math.sqrt(6 / (K + D))  # xavier_uniform's support; a normal init exceeds it
    assert (build_head("spherefacer", D, K).weight.abs() > bound).any()
    assert not (build_head("spherefacer", D, K, renorm=False).weight.abs() > bound).any()
    _, loss, gx, gw = _ours("spherefacer", renorm=False)
    ref = _reference("H", "v2", 1.4, s=60.0, lw=50.0)
    torch.testing.assert_close(loss.double(), ref[0], rtol=2e-6, atol=1e-6)  # same value and x gradient
    torch.testing.assert_close(gx.double(), ref[1], rtol=2e-6, atol=1e-6)
    assert not torch.allclose(gw.double(), ref[2], atol=1e-3)  # W's gradient: tangent part only
    head, *_ = _ours("spherefacer")
    torch.testing.assert_close(head.weight.detach().norm(dim=1), torch.ones(5))
    fixed, *_ = _ours("spherefacer", renorm=False)
    torch.testing.assert_close(fixed.weight.detach(), torch.tensor(W))
