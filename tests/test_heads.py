"""Heads (losses): softmax, ArcFace at known angles, registry errors, margin scheduler."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.heads import HEADS, Head, MarginScheduler, build_head, canonical_heads, head_defaults
from trainers.heads.margin import ArcFaceHead
from trainers.heads.ops import cosine_matrix

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _unit(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


def _arc_at_angles(angles_deg, s, m, device="cpu"):
    """2-D head whose class-0 weight is at 0°, class 1 at 90°, class 2 at 200° (scaled, to check
    normalisation); x_i at angles_deg[i] (various norms) with target class 0."""
    head = build_head("arcface", 2, 3, s=s, m=m).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([_unit(0), _unit(90), [3 * v for v in _unit(200)]]))
    x = torch.tensor([[(i + 2.0) * v for v in _unit(a)] for i, a in enumerate(angles_deg)],
                     device=device)
    return head, x, torch.zeros(len(angles_deg), dtype=torch.long, device=device)


def _expected_arcface(angles_deg, s, m):
    """ArcFace's formula (WeSpeaker's AAM), computed from angles with math (not from cosines)."""
    rows = []
    for a in angles_deg:
        th = math.radians(a)
        if th <= math.pi - m:
            target = math.cos(th + m)
        else:
            target = math.cos(th) - (1 + math.cos(math.pi - m))
        rows.append([s * target, s * math.cos(math.radians(a - 90)),
                     s * math.cos(math.radians(a - 200))])
    return torch.tensor(rows)


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("unit_x", [True, False])
def test_cosine_matrix_value_and_gradients(unit_x, scaled):
    """The memory-saving autograd function equals autograd through F.normalize, value and the
    gradients of x, W and the scale (gradcheck in float64 against finite differences, too)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    inputs = (x, w, s) if scaled else (x, w)
    fn = lambda a, b, *c: cosine_matrix(a, b, unit_x, *c)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    upstream = torch.randn(6, 7, generator=g, dtype=torch.float64)
    ref = (F.normalize(x, dim=1) if unit_x else x) @ F.normalize(w, dim=1).t() * (s if scaled else 1)
    want = torch.autograd.grad((ref * upstream).sum(), inputs)
    out = fn(*inputs)
    got = torch.autograd.grad((out * upstream).sum(), inputs)
    torch.testing.assert_close(out, ref)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_arcface_logits_at_known_angles(device):
    angles = [30.0, 60.0, 150.0, 175.0]  # m=0.5 rad: π − m ≈ 151.4°, so 175° takes the fallback
    head, x, y = _arc_at_angles(angles, s=32.0, m=0.5, device=device)
    got = head.logits(x, y)
    torch.testing.assert_close(got.cpu(), _expected_arcface(angles, 32.0, 0.5), rtol=0, atol=2e-4)
    torch.testing.assert_close(head(x, y), F.cross_entropy(got, y))
    fallback = 32.0 * (math.cos(math.radians(175)) - 1 - math.cos(math.pi - 0.5))
    assert abs(got[3, 0].item() - fallback) < 2e-4


def test_arcface_zero_margin_and_no_label_are_scaled_cosine():
    angles = [10.0, 95.0, 179.0]
    head, x, y = _arc_at_angles(angles, s=20.0, m=0.0)
    plain = _expected_arcface(angles, 20.0, 0.0)  # cos(θ + 0) = cos θ
    torch.testing.assert_close(head.logits(x, y), plain, rtol=0, atol=1e-4)
    head.set_margin(0.3)
    torch.testing.assert_close(head.logits(x), plain, rtol=0, atol=1e-4)  # y=None: no margin
    torch.testing.assert_close(head.logits(x, y), _expected_arcface(angles, 20.0, 0.3),
                               rtol=0, atol=1e-4)


def test_arcface_margin_is_settable_and_validated():
    head = build_head("aam", 16, 10)
    assert type(head) is ArcFaceHead and HEADS["aam"] is HEADS["arcface"]
    assert head.margin == 0.2 and head.s == 32.0  # WeSpeaker defaults
    head.margin = 0.35
    assert head.margin == 0.35 and "m=0.35" in repr(head) and "s=32" in repr(head)
    with pytest.raises(ValueError, match="margin"):
        head.set_margin(-0.1)
    assert head.margin == 0.35  # a rejected value leaves the head unchanged


def test_arcface_detach_margin_same_value_cos_gradient():
    torch.manual_seed(0)
    full = build_head("arcface", 8, 5, m=0.4)
    cgd = build_head("arcface", 8, 5, m=0.4, detach_margin=True)
    cgd.load_state_dict(full.state_dict())
    x, y = torch.randn(6, 8), torch.randint(0, 5, (6,))
    x1, x2, x3 = (x.clone().requires_grad_() for _ in range(3))
    l_full, l_cgd = full(x1, y), cgd(x2, y)
    torch.testing.assert_close(l_full, l_cgd)
    l_full.backward(), l_cgd.backward()
    # CGD gradient == gradient of CE(s·(cos + constant d_θ))
    with torch.no_grad():
        d = (full.logits(x, y) - full.logits(x)) / full.s
    F.cross_entropy(full.s * (full.cosine(x3) + d), y).backward()
    torch.testing.assert_close(x2.grad, x3.grad)
    assert not torch.allclose(x1.grad, x2.grad)


def test_arcface_gradients_finite_at_cos_one_and_any_batch():
    head = build_head("arcface", 4, 3)
    x = head.weight.detach()[[0]].clone().requires_grad_()  # θ_y = 0 exactly: sin θ = 0
    head(x, torch.tensor([0])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    for b in (1, 2, 33):
        assert head(torch.randn(b, 4), torch.randint(0, 3, (b,))).shape == ()


def test_arcface_float32_under_autocast():
    head = build_head("arcface", 8, 4)
    x, y = torch.randn(3, 8), torch.tensor([0, 1, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head.logits(x, y)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, head.logits(x, y))


def test_softmax_equals_cross_entropy_on_linear():
    torch.manual_seed(0)
    head = build_head("softmax", 16, 7)
    x, y = torch.randn(5, 16), torch.randint(0, 7, (5,))
    lin = torch.nn.Linear(16, 7)
    lin.load_state_dict(head.fc.state_dict())
    torch.testing.assert_close(head(x, y), F.cross_entropy(lin(x), y))
    torch.testing.assert_close(head.logits(x, y), lin(x))
    assert head.fc.bias is not None


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown head 'sphereface9'; choose one of: .*arcface"):
        build_head("sphereface9", 8, 4)
    with pytest.raises(ValueError, match=r"unknown argument 'margin'.*accepted: s, m"):
        build_head("arcface", 8, 4, margin=0.2)
    with pytest.raises(ValueError, match=r"unknown argument 's'.*accepted: \(none\)"):
        build_head("softmax", 8, 4, s=30)


@pytest.mark.parametrize("kwargs, match", [
    (dict(s=0), "s must be"), (dict(s=-1.0), "s must be"), (dict(m=-0.1), "margin"),
    (dict(m=20), "margin"), (dict(m="abc"), "must be a number"), (dict(s=float("nan")), "s must be a finite"),
    (dict(s=float("inf")), r"s must be a finite number, got inf"),
])
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_head("arcface", 8, 4, **kwargs)


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_classes"):
        build_head("softmax", 8, 1)
    with pytest.raises(ValueError, match="embed_dim"):
        build_head("arcface", 0, 4)


def test_a_head_added_to_the_table_is_built_with_its_keywords():
    class Scaled(Head):
        def __init__(self, embed_dim, num_classes, k: float = 2.0):
            super().__init__(embed_dim, num_classes)
            self.k = k

        def logits(self, x, y=None):
            return self.k * x[:, :self.num_classes]

    HEADS["_test_scaled"] = Scaled
    try:
        head = build_head("_test_scaled", 4, 3, k=3.0)
        assert head.k == 3.0 and head(torch.randn(2, 4), torch.tensor([0, 2])).ndim == 0
        with pytest.raises(ValueError, match="unknown argument 'm'"):
            build_head("_test_scaled", 4, 3, m=0.1)
    finally:
        HEADS.pop("_test_scaled")


def _wespeaker_margin(it, epoch_iter, start_epoch, fix_epoch, final):
    """WeSpeaker's iteration-based rule (1-based epochs), written out for comparison."""
    s_it, f_it = (start_epoch - 1) * epoch_iter, (fix_epoch - 1) * epoch_iter
    if it >= f_it:
        return final
    if it < s_it:
        return 0.0
    p = (it - s_it) / (f_it - s_it)
    return final * (1.0 - math.exp(p * math.log(1e-3 / (1.0 + 1e-6))))


def test_margin_scheduler_exp():
    sch = MarginScheduler(0.2, 19, 39)  # WeSpeaker VoxCeleb config: epochs 20 and 40, 1-based
    assert sch.margin_at(0) == 0.0 and sch.margin_at(18.99) == 0.0
    assert sch.margin_at(19) == pytest.approx(0.0, abs=1e-12)
    assert sch.margin_at(29) == pytest.approx(0.2 * (1 - 1e-3 ** 0.5))  # ≈ 0.1937
    assert sch.margin_at(38.999) == pytest.approx(0.2 * 0.999, rel=1e-3)
    assert sch.margin_at(39) == 0.2 and sch.margin_at(150) == 0.2
    for it in range(0, 45 * 10, 7):
        assert sch.margin_at(it / 10) == pytest.approx(_wespeaker_margin(it, 10, 20, 40, 0.2),
                                                       abs=1e-8)


def test_margin_scheduler_linear_apply_and_errors():
    sch = MarginScheduler(0.4, 2, 6, increase_type="linear", initial_m=0.1)
    assert [sch.margin_at(e) for e in (0, 2, 4, 6, 9)] == pytest.approx([0.1, 0.1, 0.25, 0.4, 0.4])
    head = build_head("arcface", 8, 4)
    assert sch.apply(head, 4.0) == pytest.approx(0.25) and head.margin == pytest.approx(0.25)
    assert sch.apply(build_head("softmax", 8, 4), 4.0) == pytest.approx(0.25)  # no-op on softmax
    step = MarginScheduler(0.2, 3, 3)
    assert step.margin_at(2.9) == 0.0 and step.margin_at(3) == 0.2
    with pytest.raises(ValueError, match="fix_start_epoch"):
        MarginScheduler(0.2, 5, 4)
    with pytest.raises(ValueError, match="increase_type"):
        MarginScheduler(0.2, 1, 4, increase_type="cosine")
    with pytest.raises(ValueError, match="final_m"):
        MarginScheduler(-0.2, 1, 4)


@pytest.mark.parametrize("head_cfg", [{"name": n} for n in canonical_heads()] + [
    {"name": "sphereface2", "margin_type": "M"}, {"name": "arcface", "m": 0.3}])
def test_resolved_head_config_names_every_keyword_and_builds_the_same_head(head_cfg):
    """What config.yaml records: every keyword of the head's class, none left None, and building from it
    gives the head the short config gives."""
    resolved = head_defaults(head_cfg)
    cls = HEADS[head_cfg["name"]]
    keywords = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "embed_dim", "num_classes")]
    assert list(resolved) == ["name", *keywords] and None not in resolved.values()
    assert {k: v for k, v in resolved.items() if k in head_cfg} == head_cfg
    kwargs = {k: v for k, v in resolved.items() if k != "name"}
    short = {k: v for k, v in head_cfg.items() if k != "name"}
    assert build_head(head_cfg["name"], 8, 4, **kwargs).extra_repr() == \
        build_head(head_cfg["name"], 8, 4, **short).extra_repr()
