"""Clean and robust accuracy of trained models as parallel Ray tasks: one task per (model, slice of the test
set), each running every attack at every epsilon of its grid (attacks.py), white box and transferred from a
separately trained source model. (correct, examples) counts come back and are summed, so the result does not
depend on how the test set was cut."""
from __future__ import annotations

import numpy as np
import torch

from trainers.robust.attacks import AttackSpec, craft, predict, robust_correct


def build_net(task, state: dict):
    """The trained classifier (normalization layer included) in eval mode."""
    model = task.build_model()
    model.load_state_dict(state)
    return model.net.eval()


def score_slice(task, state: dict, part: tuple, specs: list[AttackSpec], source: tuple | None, seed: int,
                transfer_steps: int = 20, cw_examples: int = 0) -> dict:
    """{"clean": (correct, n), attack label: {eps: (correct, n)}, "transfer " + label: {eps: (correct, n)}} for a
    slice (uint8 N x H x W x C images, labels). Transfer: FGSM and PGD-`transfer_steps` crafted on `source`.
    cw_l2 runs on the slice's first `cw_examples` (0: all) and is crafted once (its perturbation is minimal, not
    bounded): each epsilon only decides which of its perturbations count."""
    torch.set_num_threads(1)   # one task per CPU
    images, labels = part
    net = build_net(task, state)
    src = build_net(*source) if source is not None else None
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    out = {"clean": (int((predict(net, x) == labels).sum()), len(labels))}
    cw = {}
    for spec in specs:
        if spec.name == "cw_l2":
            m = cw_examples or len(labels)
            key = (spec.steps, spec.search_steps)
            if key not in cw:
                cw[key] = craft(net, x[:m], labels[:m], spec, task.num_classes, seed)
            ok = robust_correct(net, x[:m], labels[:m], spec, task.num_classes, seed, adv=cw[key])
            out.setdefault(spec.label, {})[spec.eps] = (int(ok.sum()), len(ok))
            continue
        ok = robust_correct(net, x, labels, spec, task.num_classes, seed)
        out.setdefault(spec.label, {})[spec.eps] = (int(ok.sum()), len(ok))
        if src is not None and (spec.name == "fgsm" or (spec.name == "pgd" and spec.steps == transfer_steps)):
            ok = robust_correct(net, x, labels, spec, task.num_classes, seed, source=src)
            out.setdefault(f"transfer {spec.label}", {})[spec.eps] = (int(ok.sum()), len(ok))
    return out


def evaluate_models(models: dict, images: np.ndarray, labels: np.ndarray, specs: list[AttackSpec],
                    source: tuple | None = None, slices: int = 2, seed: int = 0, transfer_steps: int = 20,
                    cw_examples: int = 0) -> dict:
    """{name: {"clean": acc, attack label: {eps: acc}}} for `models` ({name: (task, state dict)}), with Ray
    tasks over `slices` parts of the test set per model."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    # placement_group=None: inside a Tune trial the tasks would otherwise be captured by the trial's placement
    # group, which holds no CPU for them, and could never be scheduled
    remote = ray.remote(num_cpus=1)(score_slice).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    src = ray.put(source) if source is not None else None
    cuts = np.array_split(np.arange(len(labels)), max(1, min(slices, len(labels))))
    # each slice goes to the object store once and serves every model
    parts = [ray.put((images[idx], labels[idx])) for idx in cuts]
    per_slice_cw = -(-cw_examples // len(cuts)) if cw_examples else 0
    states = {name: ray.put(state) for name, (_, state) in models.items()}
    futures = {name: [remote.remote(task, states[name], part, specs, src, seed, transfer_steps, per_slice_cw)
                      for part in parts] for name, (task, _) in models.items()}
    results = {}
    for name, refs in futures.items():
        counts = ray.get(refs)
        res = {"clean": sum(c["clean"][0] for c in counts) / sum(c["clean"][1] for c in counts)}
        for key, by_eps in counts[0].items():
            if isinstance(by_eps, dict):
                res[key] = {eps: sum(c[key][eps][0] for c in counts) / max(1, sum(c[key][eps][1] for c in counts))
                            for eps in by_eps}
        results[name] = res
    return results
