"""CRP figures: accuracy against epsilon per attack (one line per method) and example adversarial images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.robust.attacks import AttackSpec, craft, predict


def plot_robustness(results: dict, path: Path) -> Path:
    """One panel per attack (plus transfer), accuracy (%) against epsilon, a line per method; the clean
    accuracy is the point at epsilon 0 of every L-infinity panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainers.plots import save_figure

    attacks = list(dict.fromkeys(k for r in results.values() for k, v in r.items() if isinstance(v, dict)))
    cols = min(3, len(attacks)) or 1
    rows = -(-len(attacks) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, attack in zip(axes.flat, attacks):
        l2 = "l2" in attack
        for method, res in results.items():
            if attack not in res:
                continue
            eps = sorted(res[attack])
            xs, ys = ([] if l2 else [0.0]) + eps, ([] if l2 else [100 * res["clean"]]) + [100 * res[attack][e]
                                                                                        for e in eps]
            ax.plot(xs, ys, marker="o", label=method)
        ax.set_title(attack)
        ax.set_xlabel("epsilon (L2)" if l2 else "epsilon (L-infinity)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_examples(models: dict, images: np.ndarray, labels: np.ndarray, classes, eps: float, step: float, steps: int,
                  count: int, path: Path, seed: int = 0) -> Path:
    """Per method, a row of PGD-`steps` examples at `eps` crafted against that method's model, titled with its
    prediction (the first row: the clean images and their labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainers.plots import save_figure
    from trainers.robust.evaluate import build_net

    x = images[:count].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    y = labels[:count]
    rows = [("clean", x, y)]
    for method, (task, state) in models.items():
        net = build_net(task, state)
        adv = craft(net, x, y, AttackSpec("pgd", eps, steps, step), task.num_classes, seed)
        rows.append((method, adv, predict(net, adv)))
    fig, axes = plt.subplots(len(rows), len(y), figsize=(1.4 * len(y), 1.6 * len(rows)), squeeze=False)
    for r, (name, xs, preds) in enumerate(rows):
        for c in range(len(y)):
            ax = axes[r, c]
            img = xs[c].transpose(1, 2, 0)
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(classes[int(preds[c])])[:10], fontsize=7, color="black" if preds[c] == y[c] else "red")
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"PGD-{steps} at eps {eps:g} against each model (red: misclassified)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
