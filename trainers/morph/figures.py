"""The morph grid: one row per (target, voice) example; columns: the target face, a real face of the voice's owner,
the no-voice reconstruction (gates at 1), then the morph by each trained lambda."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.morph.evaluate import morph


def to_rgb(x: np.ndarray) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1]."""
    return np.clip((x.transpose(1, 2, 0) + 1) / 2, 0, 1)


def plot_morph_grid(models: dict, faces: np.ndarray, face_labels: np.ndarray, voices: np.ndarray, plan: dict,
                    names: list[str], rows: int, path: Path, seed: int) -> Path:
    """`models`: {lambda: autoencoder}; `plan` as trainers.morph.evaluate.queries; `rows` examples, seeded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainers.plots import save_figure

    pick = np.random.default_rng([seed, 11]).choice(len(plan["a"]), min(rows, len(plan["a"])), replace=False)
    x = faces[plan["target"][pick]]
    v = voices[plan["utt"][pick]]
    owner = np.array([np.flatnonzero(face_labels == b)[0] for b in plan["b"][pick]])
    lams = sorted(models)
    first = models[lams[0]]
    cols = [("target", x), ("voice owner", faces[owner]), ("no voice", morph(first, x, None))] + \
        [(f"morph, λ={lam:g}", morph(models[lam], x, v)) for lam in lams]
    fig, axes = plt.subplots(len(pick), len(cols), figsize=(1.5 * len(cols), 1.6 * len(pick)), squeeze=False)
    for r in range(len(pick)):
        for c, (title, images) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(to_rgb(images[r]))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
        axes[r, 0].set_ylabel(f"{names[plan['a'][pick[r]]]}\n<- {names[plan['b'][pick[r]]]}", fontsize=5)
    fig.suptitle("Voice-guided face morphing (test identities)", fontsize=9)
    out = save_figure(fig, path)
    plt.close(fig)
    return Path(out)
