"""Named search spaces: dotted config keys (the same keys as `--set`) -> distributions.

A space (built in, or a user's YAML file of the same shape):

    workflow: speaker                   # which workflow's config the keys belong to
    fixed: {head.name: arcface}         # overrides every trial gets
    params:                             # what the search samples
      head.m: {uniform: [0.1, 0.5]}
      head.s: {choice: [16, 32, 64]}
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
      data.kind: {int: [1, 4]}           # integers, both ends included

Distributions: uniform, loguniform, int (both ends included), choice (of numbers, strings or
booleans: Optuna's categorical). A key whose config field is a list (e.g. ESC-50's `aggregators`)
takes one sampled value wrapped as a one-element list.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from trainers.config import ConfigError

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")

SPACES: dict[str, dict] = {
    # margins per head (speaker verification; ranges around the papers' defaults, docs/speaker.md)
    "arcface": {"workflow": "speaker", "fixed": {"head.name": "arcface"},
                "params": {"head.m": {"uniform": [0.1, 0.5]}, "head.s": {"choice": [16, 32, 64]}}},
    "cosface": {"workflow": "speaker", "fixed": {"head.name": "cosface"},
                "params": {"head.m": {"uniform": [0.1, 0.45]}, "head.s": {"choice": [16, 32, 64]}}},
    # SphereFace-R with hard feature normalization (the paper's setting): a fixed m, the scale s
    "spherefacer": {"workflow": "speaker", "fixed": {"head.name": "spherefacer", "head.fn": "hfn"},
                    "params": {"head.m": {"uniform": [1.1, 2.0]}, "head.s": {"choice": [30, 45, 60]},
                               "head.magnitude": {"choice": ["v0", "v1", "v2"]}}},
    # without / with soft feature normalization m starts at 1 (OpenSphere) and grows by dm at each LR step
    "spherefacer_fn": {"workflow": "speaker", "fixed": {"head.name": "spherefacer", "head.magnitude": "v0"},
                       "params": {"head.fn": {"choice": ["none", "sfn"]}, "head.dm": {"loguniform": [0.05, 2.0]}}},
    "sphereface2": {"workflow": "speaker", "fixed": {"head.name": "sphereface2"},
                    "params": {"head.lam": {"uniform": [0.5, 0.9]}, "head.r": {"choice": [16, 32, 40, 64]},
                               "head.m": {"uniform": [0.1, 0.5]}, "head.t": {"uniform": [1.0, 5.0]},
                               "head.margin_type": {"choice": ["C", "A"]}}},
    # the multiplicative margin lives on another scale (m >= 1), so it has a space of its own
    "sphereface2_m": {"workflow": "speaker", "fixed": {"head.name": "sphereface2", "head.margin_type": "M"},
                      "params": {"head.lam": {"uniform": [0.5, 0.9]}, "head.r": {"choice": [16, 32, 40, 64]},
                                 "head.m": {"uniform": [1.1, 2.0]}, "head.t": {"uniform": [1.0, 5.0]}}},
    "mask_proxy": {"workflow": "speaker", "fixed": {"head.name": "mask_proxy", "head.k": 2},
                   "params": {"head.lam": {"uniform": [0.0, 2.0]}, "head.init_w": {"uniform": [5.0, 20.0]}}},
    "mmp": {"workflow": "speaker", "fixed": {"head.name": "mmp", "head.k": 2},
            "params": {"head.lam": {"uniform": [0.0, 2.0]}, "head.init_w": {"uniform": [5.0, 20.0]}}},
    # faces: the face workflow's default head, SphereFace2 (C), on the face backbone
    "face_sphereface2": {"workflow": "face", "fixed": {"head.name": "sphereface2"},
                         "params": {"head.lam": {"uniform": [0.5, 0.9]}, "head.r": {"choice": [16, 32, 40, 64]},
                                    "head.m": {"uniform": [0.1, 0.5]}}},
    # weakly-supervised SED ablations (one held-out fold per trial, 20 dB)
    "sed": {"workflow": "sed", "fixed": {},
            "params": {"model.aux_decoder": {"choice": [True, False]}, "model.alpha": {"loguniform": [1e-4, 1e-1]},
                       "model.pooling": {"choice": ["two_step", "two_step_scalar", "time_attention", "average",
                                                    "max"]}}},
    # ESC-50: aggregator x model (fusion_early is the early-fusion model)
    "esc50": {"workflow": "esc50_actions", "fixed": {},
              "params": {"aggregators": {"choice": ["sum", "mean", "mv", "ds"]},
                         "models": {"choice": ["av_logreg", "av_mlp", "fusion_early"]}}},
    # semi-weak labels: bag size, loss, regularization, stage 2
    "semiweak": {"workflow": "semiweak", "fixed": {},
                 "params": {"bags.size": {"choice": [8, 16, 32]}, "method.loss": {"choice": ["poisson", "mse", "l1"]},
                            "method.reg_weight": {"uniform": [0.0, 0.5]}, "method.stage2": {"choice": [True, False]}}},
    # CRP (adversarial robustness): copies K, radius r (around the paper's r = eps .. 2 eps), neighbourhood
    "crp": {"workflow": "robust", "fixed": {},
            "params": {"crp.copies": {"choice": [2, 5, 10, 20]}, "crp.radius": {"uniform": [0.05, 0.4]},
                       "crp.noise": {"choice": ["linf_uniform", "gaussian", "sign", "l2_ball"]}}},
    # voice-guided face morphing: lambda, the keep-close weight (how much the target face may change)
    "lambda": {"workflow": "morph", "fixed": {},
               "params": {"loss.lam": {"loguniform": [0.01, 100.0]}}},
}


def load_space(name_or_path: str) -> dict:
    """A built-in space by name, or a YAML file of the same shape; checked."""
    if name_or_path in SPACES:
        space = SPACES[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"unknown search space {name_or_path!r}: name one of {', '.join(SPACES)} or a YAML file")
        try:
            space = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(space, dict):
            raise ConfigError(f"{path} must hold a mapping with workflow, fixed and params")
    where = name_or_path
    unknown = sorted(set(space) - {"workflow", "fixed", "params"})
    if unknown or "workflow" not in space or not space.get("params"):
        raise ConfigError(f"search space {where}: needs 'workflow' and a non-empty 'params' (and optional 'fixed'); "
                          f"unknown keys {unknown}" if unknown else f"search space {where}: needs 'workflow' and a "
                          "non-empty 'params'")
    for key, spec in space["params"].items():
        _check(where, key, spec)
    return {"workflow": space["workflow"], "fixed": dict(space.get("fixed") or {}), "params": dict(space["params"])}


def _check(where: str, key: str, spec) -> None:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"search space {where}: {key} must be one of {{{': ..., '.join(DISTRIBUTIONS)}: ...}}, "
                          f"got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args or not all(isinstance(a, (int, float, str, bool)) for a in args):
            raise ConfigError(f"search space {where}: {key} choice needs a list of numbers, strings or booleans")
        return
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
            and args[0] < args[1]):
        raise ConfigError(f"search space {where}: {key} {kind} needs [low, high] with low < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(f"search space {where}: {key} loguniform needs low > 0")
    if kind == "int" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"search space {where}: {key} int needs integer bounds")


def tune_domains(params: dict) -> dict:
    """Ray Tune search domains (OptunaSearch turns them into Optuna distributions)."""
    from ray import tune

    make = {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "int": lambda a: tune.randint(a[0], a[1] + 1), "choice": tune.choice}
    return {key: make[kind](args) for key, spec in params.items() for kind, args in spec.items()}


def overrides(values: dict, list_keys=()) -> list[str]:
    """`--set`-style overrides of sampled (or fixed) values; keys in `list_keys` are wrapped as [value]."""
    out = []
    for key, value in values.items():
        value = [value] if key in list_keys and not isinstance(value, list) else value
        out.append(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out
