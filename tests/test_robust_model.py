"""CRP (arXiv 2103.08265) without Ray: perturbations regenerated from (seed, index, copy), the paper's models
(parameter counts derived by hand), and the attack library's FGSM / PGD against a hand computation."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainers.robust import attacks, perturb
from trainers.robust.model import build_classifier

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- perturbations

@pytest.mark.parametrize("noise", perturb.NOISES)
def test_a_copy_is_a_pure_function_of_seed_index_and_copy(noise):
    x = np.full((4, 4, 3), 0.5, dtype=np.float32)
    a = perturb.perturbed(x, noise, 0.1, seed=7, index=12, copy=3)
    assert np.array_equal(a, perturb.perturbed(x, noise, 0.1, seed=7, index=12, copy=3))
    for other in ({"seed": 8, "index": 12, "copy": 3}, {"seed": 7, "index": 13, "copy": 3},
                  {"seed": 7, "index": 12, "copy": 4}):
        assert not np.array_equal(a, perturb.perturbed(x, noise, 0.1, **other)), other


def test_copies_are_the_same_in_another_process():
    """What a second worker or a resumed run computes: a fresh interpreter gives the same bits."""
    code = ("import numpy as np; from trainers.robust import perturb; "
            "print(perturb.delta((3, 5), 'linf_uniform', 0.3, 1, 99, 2).tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == perturb.delta((3, 5), "linf_uniform", 0.3, 1, 99, 2).tobytes().hex()


@pytest.mark.parametrize("noise", perturb.NOISES)
def test_copy_k_does_not_depend_on_how_many_copies_are_drawn(noise):
    few, many = (perturb.deltas((5, 4), noise, 0.2, 3, 17, k) for k in (2, 6))
    assert np.array_equal(few, many[:2])
    assert np.array_equal(perturb.delta((5, 4), noise, 0.2, 3, 17, 2), many[1])


def test_copy_zero_is_the_clean_example_and_expand_is_example_major():
    images = np.array([[[[0]], [[255]]], [[[128]], [[64]]]], dtype=np.uint8)   # 2 x 2 x 1 x 1
    x, y, copies = perturb.expand(images, np.array([3, 5]), np.array([10, 11]), 2, "linf_uniform", 0.3, seed=1)
    assert x.shape == (6, 2, 1, 1) and y.tolist() == [3, 3, 3, 5, 5, 5] and copies.tolist() == [0, 1, 2] * 2
    assert np.array_equal(x[0], images[0] / np.float32(255)) and np.array_equal(x[3], images[1] / np.float32(255))
    assert np.array_equal(x[4], perturb.perturbed(images[1] / np.float32(255), "linf_uniform", 0.3, 1, 11, 1))
    assert np.array_equal(x[5], perturb.perturbed(images[1] / np.float32(255), "linf_uniform", 0.3, 1, 11, 2))


def test_frozen_crop_flip_is_a_padded_window_fixed_per_example_and_its_copies_perturb_it():
    x = (np.arange(2 * 6 * 5, dtype=np.float32) + 1).reshape(2, 6, 5) / 100   # C x H x W, all values distinct
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4)))
    windows = {}
    for index in range(200):
        a = perturb.frozen_crop_flip(x, 3, index)
        assert np.array_equal(a, perturb.frozen_crop_flip(x, 3, index))   # frozen: the same in every epoch
        found = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)
                 if np.array_equal(a, (lambda w: w[:, :, ::-1] if flip else w)(padded[:, top:top + 6, left:left + 5]))]
        assert len(found) == 1, found   # one window of the zero-padded image (RandomCrop, padding 4), maybe mirrored
        windows[index] = found[0]
    assert len({w[:2] for w in windows.values()}) > 40                      # offsets spread over the 9 x 9 grid
    assert 70 < sum(w[2] for w in windows.values()) < 130                   # flipped about half the time
    images = (x[None] * 100).astype(np.uint8)                               # 1 x C x H x W
    out, _, _ = perturb.expand(images, np.array([1]), np.array([7]), 2, "linf_uniform", 0.1, seed=3,
                               augment="crop_flip")
    base = perturb.frozen_crop_flip(images[0] / np.float32(255), 3, 7)
    assert np.array_equal(out[0], base)                                     # the clean version is the augmented one
    assert np.array_equal(out[2], perturb.perturbed(base, "linf_uniform", 0.1, 3, 7, 2))


def test_budget_steps_gives_vanilla_as_many_inputs_per_epoch_as_crp_all_clean():
    from trainers.robust.task import RobustTask

    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 1) * 10   # N H W C, as the shards hold them
    labels, index = np.array([4, 7]), np.array([0, 1])
    crp = RobustTask("crp", "mnist_net", "mnist", 10, 1, 3, 8, copies=3, repeats=4)
    vanilla = RobustTask("vanilla", "mnist_net", "mnist", 10, 1, 3, 8, copies=3, repeats=4)
    plain = RobustTask("vanilla", "mnist_net", "mnist", 10, 1, 3, 8, copies=3)
    (xc, yc), (xv, yv), (xp, yp) = (t.expanded(images, labels, index) for t in (crp, vanilla, plain))
    clean = images.transpose(0, 3, 1, 2) / np.float32(255)
    assert len(xc) == len(xv) == 8 and len(xp) == 2   # (K + 1) N for both under "steps"; N for the paper's
    assert yv.tolist() == [4] * 4 + [7] * 4 == yc.tolist()
    assert all(np.array_equal(xv[j], clean[j // 4]) for j in range(8))   # vanilla's repeats are all clean
    assert not np.array_equal(xc[1], clean[0])                          # crp's are its perturbed copies


@pytest.mark.parametrize("noise, radius", [("linf_uniform", 0.3), ("sign", 0.1), ("l2_ball", 2.0),
                                           ("gaussian", 0.05)])
def test_neighbourhoods_respect_their_bounds(noise, radius):
    shape = (28, 28, 1)
    deltas = np.stack([perturb.delta(shape, noise, radius, 0, i, 1) for i in range(200)])
    flat = deltas.reshape(200, -1)
    if noise == "linf_uniform":
        assert np.abs(flat).max() <= radius + 1e-7
        # uniform on [-r, r]: mean 0, variance r^2 / 3
        assert abs(flat.mean()) < 0.01 and flat.var() == pytest.approx(radius ** 2 / 3, rel=0.02)
    elif noise == "sign":
        assert np.allclose(np.abs(flat), radius)
        assert abs((flat > 0).mean() - 0.5) < 0.01
    elif noise == "l2_ball":
        norms = np.linalg.norm(flat, axis=1)
        assert norms.max() <= radius + 1e-5
        # radius r * u^(1/d), d = 784: P(norm < r * 0.99) = 0.99^784 ~ 0.0004: nearly all mass at the rim
        assert (norms > 0.99 * radius).mean() > 0.98
    else:
        assert flat.std() == pytest.approx(radius, rel=0.02) and abs(flat.mean()) < 0.005
    # the image is clamped to [0, 1]
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    p = perturb.perturbed(x, noise, radius, 0, 5, 1)
    assert p.min() >= 0 and p.max() <= 1
    assert np.allclose(p, np.clip(x + perturb.delta(shape, noise, radius, 0, 5, 1), 0, 1))


@pytest.mark.parametrize("noise, radius, copies, message", [
    ("box", 0.3, 10, "unknown crp.noise"), ("linf_uniform", 0.0, 10, "crp.radius must be > 0"),
    ("linf_uniform", -1.0, 10, "crp.radius"), ("linf_uniform", 0.3, -1, "crp.copies")])
def test_bad_neighbourhoods_are_refused(noise, radius, copies, message):
    with pytest.raises(ValueError, match=message):
        perturb.check(noise, radius, copies)


# ----------------------------------------------------------------------------- models

def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin, cout, k, bias):
    return cin * cout * k * k + (cout if bias else 0)


def test_mnist_net_has_the_madry_net_size():
    # conv5x5 1->32 (+bias), conv5x5 32->64, FC 64*7*7 -> 1024, FC 1024 -> 10
    expected = conv(1, 32, 5, True) + conv(32, 64, 5, True) + (64 * 49 * 1024 + 1024) + (1024 * 10 + 10)
    model = build_classifier("mnist_net", "mnist", 10, 1, 28)
    assert n_params(model) == expected == 3_274_634
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_resnet18_has_the_cifar_resnet18_size():
    bn = 2   # weight and bias per channel
    total = conv(3, 64, 3, False) + bn * 64
    cin = 64
    for i, c in enumerate((64, 128, 256, 512)):
        for j in range(2):
            stride_or_widen = j == 0 and (i > 0)
            total += conv(cin, c, 3, False) + bn * c + conv(c, c, 3, False) + bn * c
            if stride_or_widen:
                total += conv(cin, c, 1, False) + bn * c
            cin = c
    total += 512 * 10 + 10
    model = build_classifier("resnet18", "svhn", 10, 3, 32)
    assert n_params(model) == total == 11_173_962
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_wrn_28_10_has_36_5m_parameters():
    total, cin = conv(3, 16, 3, True), 16
    for c in (160, 320, 640):
        for j in range(4):   # (28 - 4) / 6 blocks per stage
            total += 2 * cin + conv(cin, c, 3, True) + 2 * c + conv(c, c, 3, True)
            if j == 0:
                total += conv(cin, c, 1, True)
            cin = c
    total += 2 * 640 + 640 * 10 + 10
    model = build_classifier("wrn", "cifar10", 10, 3, 32)
    assert n_params(model) == total and round(total / 1e6, 1) == 36.5
    small = build_classifier("wrn", "cifar10", 10, 3, 32, width=0.25, depth=10)
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_normalization_is_the_first_layer():
    model = build_classifier("mnist_net", "mnist", 10, 1, 28)
    x = torch.full((1, 1, 2, 2), 0.1307 + 0.3081)
    assert torch.allclose(model[0](x), torch.ones_like(x))
    with pytest.raises(ValueError, match="channel"):
        build_classifier("mnist_net", "cifar10", 10, 1, 28)
    with pytest.raises(ValueError, match="unknown model.name"):
        build_classifier("vgg", "mnist", 10, 1, 28)


# ----------------------------------------------------------------------------- attacks

def linear_model(w: np.ndarray, b: np.ndarray) -> nn.Module:
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return nn.Sequential(nn.Flatten(), lin)


def hand_grad(w, b, x, y):
    """d CE(Wx + b, y) / dx = W^T (softmax(Wx + b) - onehot(y)), by hand."""
    z = w @ x + b
    p = [math.exp(v - max(z)) for v in z]
    p = np.array(p) / sum(p)
    p[y] -= 1
    return w.T @ p


W = np.array([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 3.0], [0.0, 0.5, -1.0, 1.0]], dtype=np.float32)
B = np.array([0.1, -0.2, 0.0], dtype=np.float32)
X = np.array([[[[0.5, 0.05]], [[0.9, 0.4]]]], dtype=np.float32)     # 1 x 2 x 1 x 2 -> 4 pixels
Y = np.array([0])


def test_fgsm_matches_the_hand_computation():
    eps = 0.1
    flat = X.reshape(-1).astype(np.float64)
    expected = np.clip(flat + eps * np.sign(hand_grad(W, B, flat, 0)), 0, 1)
    adv = attacks.craft(linear_model(W, B), X, Y, attacks.AttackSpec("fgsm", eps), 3)
    assert np.allclose(adv.reshape(-1), expected, atol=1e-6)
    assert not np.allclose(expected, np.clip(flat + eps, 0, 1))   # the signs differ per pixel


def test_pgd_matches_the_hand_computation():
    eps, step, steps = 0.12, 0.05, 3
    x0 = X.reshape(-1).astype(np.float64)
    x = x0.copy()
    for _ in range(steps):
        x = x + step * np.sign(hand_grad(W, B, x, 0))
        x = np.clip(np.clip(x, x0 - eps, x0 + eps), 0, 1)
    spec = attacks.AttackSpec("pgd", eps, steps=steps, step_size=step, random_start=False)
    adv = attacks.craft(linear_model(W, B), X, Y, spec, 3)
    assert np.allclose(adv.reshape(-1), x, atol=1e-6)
    assert np.abs(adv.reshape(-1) - x0).max() <= eps + 1e-6


def test_bim_and_mim_match_the_hand_computation():
    """BIM: PGD from x itself (Kurakin et al.); MIM: the sign of a momentum of L1-normalized gradients, mu = 1
    (Dong et al.), both in the L-infinity box."""
    eps, step, steps, y = 0.3, 0.1, 4, 2
    x = np.array([[[[0.58, 0.3]], [[0.67, 0.2]]]], dtype=np.float32)   # a point where a gradient sign flips
    x0 = x.reshape(-1).astype(np.float64)
    bim, mim, g = x0.copy(), x0.copy(), np.zeros_like(x0)
    for _ in range(steps):
        bim = np.clip(np.clip(bim + step * np.sign(hand_grad(W, B, bim, y)), x0 - eps, x0 + eps), 0, 1)
        grad = hand_grad(W, B, mim, y)
        g = 1.0 * g + grad / np.abs(grad).sum()
        mim = np.clip(np.clip(mim + step * np.sign(g), x0 - eps, x0 + eps), 0, 1)
    assert np.abs(bim - mim).max() > 0.2   # the momentum keeps a direction BIM turns back from
    for name, expected in (("bim", bim), ("mim", mim)):
        spec = attacks.AttackSpec(name, eps, steps=steps, step_size=step)   # random_start is ignored by both
        adv = attacks.craft(linear_model(W, B), x, np.array([y]), spec, 3, seed=1)
        assert np.allclose(adv.reshape(-1), expected, atol=1e-6), name
        assert spec.label == f"{name}-4"


def test_pgd_random_start_stays_in_the_box_and_is_seeded():
    spec = attacks.AttackSpec("pgd", 0.1, steps=2, step_size=0.01)
    model = linear_model(W, B)
    a = attacks.craft(model, X, Y, spec, 3, seed=3)
    assert np.array_equal(a, attacks.craft(model, X, Y, spec, 3, seed=3))
    assert np.abs(a - X).max() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1


def test_pgd_l2_stays_in_the_ball_and_unknown_attacks_are_refused():
    adv = attacks.craft(linear_model(W, B), X, Y, attacks.AttackSpec("pgd_l2", 0.2, steps=5), 3)
    assert np.linalg.norm(adv - X) <= 0.2 + 1e-5
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.check(attacks.AttackSpec("deepfool", 0.1))
