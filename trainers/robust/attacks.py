"""White-box and transfer attacks through adversarial-robustness-toolbox (ART) 1.20.1, in pixel space [0, 1].

Why ART and not torchattacks: torchattacks 3.5.1 requires requests~=2.25.1, which conflicts with the pinned
requests of Ray's stack; ART resolves against constraints.txt unchanged.

    fgsm     x' = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)                       (Goodfellow et al.)
    pgd      x_0 = x + U[-eps, eps] (random start), x_{t+1} = clip(Pi_eps(x_t + a * sign(grad)), 0, 1),
             `steps` iterations of step a; Pi_eps: back into the L-infinity box around x  (Madry et al.)
    pgd_l2   the same in the L2 ball: the step is a * grad / ||grad||_2, the projection rescales to norm eps
    bim      pgd without the random start, x_0 = x                                        (Kurakin et al.)
    mim      momentum iterative: g_{t+1} = mu * g_t + grad / ||grad||_1, x_{t+1} = clip(Pi_eps(x_t +
             a * sign(g_{t+1})), 0, 1), x_0 = x, mu = 1                                   (Dong et al.)
    cw_l2    Carlini-Wagner L2 (unbounded, minimal perturbation); at epsilon eps an example counts as robust
             when the attacked model still classifies it correctly or the perturbation found is larger than eps
bim and mim are the other attacks the official code's enum names. tests/test_robust_model.py pins fgsm, pgd
(without random start), bim and mim against a hand computation on a linear model. The random start draws from
numpy's and torch's global generators: `craft` seeds both per call.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

ATTACKS = ("fgsm", "pgd", "pgd_l2", "cw_l2", "bim", "mim")
ITERATIVE = ("pgd", "pgd_l2", "bim", "mim")   # named with their step count


@dataclasses.dataclass
class AttackSpec:
    name: str
    eps: float
    steps: int = 0            # pgd / pgd_l2 / bim / mim iterations (cw_l2: its optimizer's iterations)
    step_size: float = 0.0    # pgd's a; 0: 2.5 * eps / steps (Madry's rule of thumb)
    random_start: bool = True
    search_steps: int = 10    # cw_l2: binary search steps over its constant c (Carlini and Wagner's and ART's 10)
    const: float = 1.0        # cw_l2: the first c. ART's default 0.01 never left the clean point in 10-20 steps
                              # with 3-5 search steps (measured on the demo's models: every L2 norm 0)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.steps}" if self.name in ITERATIVE else self.name


def check(spec: AttackSpec) -> None:
    if spec.name not in ATTACKS:
        raise ValueError(f"unknown attack {spec.name!r}; choose from {', '.join(ATTACKS)}")
    if spec.eps < 0 or (spec.name != "fgsm" and spec.steps < 1):
        raise ValueError(f"attack {spec.name}: eps must be >= 0 and steps >= 1, got eps {spec.eps}, steps {spec.steps}")


def classifier(model: nn.Module, input_shape: tuple, num_classes: int):
    """ART's wrapper of a model in eval mode that takes [0, 1] pixels (N x C x H x W)."""
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                             nb_classes=num_classes, clip_values=(0.0, 1.0), device_type="cpu"
                             if not next(model.parameters()).is_cuda else "gpu")


def _attack(clf, spec: AttackSpec, batch_size: int):
    from art.attacks.evasion import (
        CarliniL2Method,
        FastGradientMethod,
        MomentumIterativeMethod,
        ProjectedGradientDescentPyTorch,
    )

    if spec.name == "fgsm":
        return FastGradientMethod(clf, norm=np.inf, eps=spec.eps, batch_size=batch_size)
    if spec.name == "cw_l2":
        return CarliniL2Method(clf, max_iter=spec.steps, binary_search_steps=spec.search_steps,
                               initial_const=spec.const, batch_size=batch_size,
                               verbose=False)
    step = spec.step_size or 2.5 * spec.eps / spec.steps
    if spec.name == "mim":
        return MomentumIterativeMethod(clf, norm=np.inf, eps=spec.eps, eps_step=step, decay=1.0, max_iter=spec.steps,
                                       batch_size=batch_size, verbose=False)
    return ProjectedGradientDescentPyTorch(clf, norm=2 if spec.name == "pgd_l2" else np.inf, eps=spec.eps,
                                           eps_step=step, max_iter=spec.steps,
                                           num_random_init=int(spec.random_start and spec.name != "bim"),
                                           batch_size=batch_size, verbose=False)


def craft(model: nn.Module, x: np.ndarray, y: np.ndarray, spec: AttackSpec, num_classes: int, seed: int = 0,
          batch_size: int = 128) -> np.ndarray:
    """Adversarial versions of x (float32 N x C x H x W in [0, 1]) against `model` for labels y."""
    check(spec)
    if spec.eps == 0 and spec.name != "cw_l2":
        return x.copy()
    np.random.seed(seed)   # ART's random start reads the global generators
    torch.manual_seed(seed)
    clf = classifier(model, x.shape[1:], num_classes)
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    return _attack(clf, spec, batch_size).generate(x=x.astype(np.float32), y=onehot).astype(np.float32)


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch_size]).to(device)).argmax(1).cpu().numpy()
                               for i in range(0, len(x), batch_size)])


def robust_correct(model: nn.Module, x: np.ndarray, y: np.ndarray, spec: AttackSpec, num_classes: int,
                   seed: int = 0, source: nn.Module | None = None, adv: np.ndarray | None = None) -> np.ndarray:
    """Per example: does `model` classify the attacked input correctly? The attack is crafted on `source`
    (black-box transfer) when given, else on `model` (white box), unless `adv` is given (cw_l2's minimal
    perturbations serve every epsilon). cw_l2 counts perturbations larger than spec.eps (L2) as failed attacks."""
    if adv is None:
        adv = craft(source if source is not None else model, x, y, spec, num_classes, seed)
    correct = predict(model, adv) == y
    if spec.name == "cw_l2":
        correct |= np.linalg.norm((adv - x).reshape(len(x), -1), axis=1) > spec.eps
    return correct
