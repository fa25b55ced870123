"""One file's attacks: FoolHD (untargeted and targeted) and the FGSM / BIM baselines at matched SNR, with their
metrics (prediction, success, SNR, PESQ, STOI). Pure torch / numpy: trainers/foolhd/parallel.py runs it as Ray tasks.

FoolHD per file (official nn_gae_{untargeted,targeted}.py): an autoencoder (trainers/foolhd/gae.py)
is trained on this one utterance with Adam (lr 1e-3, weight decay 1e-5) for up to 500 (untargeted) / 1000 (targeted)
iterations on loss = perceptual + margin (trainers/foolhd/losses.py); the target is in eval mode and frozen, the
autoencoder in train mode. Whenever an iterate succeeds (untargeted: prediction != the clean prediction; targeted:
prediction == target) with a lower perceptual loss than the best so far, it is kept; the result is the kept iterate,
or the last one when none succeeded. Which autoencoder each file starts from (`AttackConfig.fresh_per_file`):
    True (default): a new one per file, a copy of the pretrained autoencoder (`init: pretrained`, trained to
        reconstruct the training utterances through the one loop) or randomly initialised from (seed, file index)
        (`init: random`): files are independent, so they run as parallel tasks and a rerun resumes per file;
    False: the official loop's behaviour, one autoencoder carried from file to file (its weights after file i start
        file i + 1; the files of a chain then run one after another).
The released code starts the first file from a pretrained autoencoder checkpoint that is not published; this project
pretrains its own (docs/faithfulness.md). A random start is a poor one: the perceptual loss cannot tell x from -x,
and the autoencoder first has to learn to reconstruct at all.

Success is finally judged on what is written: the kept iterate rounded to 16-bit PCM and classified again.

Baselines (the official repo's nn_fgsm.py, ART there, by hand here): on the waveform through the same front end,
cross-entropy against the clean prediction, untargeted,
    FGSM  x' = clip(x + eps sign(grad), -1, 1)
    BIM   100 steps of eps / 5, each projected back into the L-infinity ball of radius eps and clipped
with eps per file such that the FGSM perturbation has FoolHD's untargeted SNR on that file:
||eps sign(g)||^2 = eps^2 n, so eps = rms(x) 10^(-SNR / 20) (BIM's perturbation, inside the same ball, is at most
as loud).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from datasets.audio import decode_wav, encode_wav
from trainers.foolhd.config import BASELINES, MODES, AttackConfig  # noqa: F401  (re-exported)
from trainers.foolhd.frontend import features, mfcc
from trainers.foolhd.gae import GatedAutoEncoder
from trainers.foolhd.losses import margin_loss, perceptual_loss
from trainers.foolhd.xvector import XVectorSID


def quantize(wave: np.ndarray, sample_rate: int = 8000) -> np.ndarray:
    """What the 16-bit PCM wav written for `wave` holds (the project's one wav encoder, read back)."""
    return decode_wav(encode_wav(wave, sample_rate))[0]


def snr_db(clean: np.ndarray, adv: np.ndarray) -> float:
    """10 log10(||x||^2 / ||x' - x||^2); inf when nothing changed."""
    noise = float(np.sum((adv.astype(np.float64) - clean) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(clean.astype(np.float64) ** 2)) / noise)


def pesq_score(clean: np.ndarray, adv: np.ndarray, sample_rate: int) -> float | None:
    """PESQ (the `pesq` package): narrow-band at 8 kHz, wide-band at 16 kHz; None where it cannot score (too short,
    no speech found) or the package is missing."""
    try:
        from pesq import pesq
    except ImportError:
        return None
    try:
        return float(pesq(sample_rate, clean, adv, "wb" if sample_rate == 16000 else "nb"))
    except Exception:   # pesq's own errors (NoUtterancesError, BufferTooShortError) and unsupported rates
        return None


def stoi_score(clean: np.ndarray, adv: np.ndarray, sample_rate: int) -> float | None:
    try:
        from pystoi import stoi
    except ImportError:
        return None
    try:
        return float(stoi(clean, adv, sample_rate, extended=False))
    except Exception:
        return None


def predict(model: XVectorSID, wave: np.ndarray) -> int:
    with torch.no_grad():
        return int(model(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None]).argmax(1))


def foolhd(model: XVectorSID, wave: np.ndarray, clean_pred: int, cfg: AttackConfig, targeted: bool,
           target: int | None, seed, init_state: dict | None = None) -> tuple[np.ndarray, dict, dict]:
    """(adversarial wave, info, the autoencoder's final state) for one utterance."""
    torch.manual_seed(int(np.random.default_rng(seed).integers(2**31)))
    gae = GatedAutoEncoder(cfg.channels, dropout=cfg.dropout)
    if init_state is not None:
        gae.load_state_dict(init_state)
    gae.train()
    opt = torch.optim.Adam(gae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None]
    with torch.no_grad():
        clean_mfcc = mfcc(x[0], model.front)
    label = torch.tensor([target if targeted else clean_pred])
    best, best_loss, best_it, last = None, math.inf, 0, 0
    steps = cfg.targeted_iterations if targeted else cfg.iterations
    for it in range(steps):
        y = gae(x)
        feats, raw = features(y[0], model.front)
        perceptual = perceptual_loss(raw, clean_mfcc)
        logits = model.classify(feats[None])
        loss = perceptual + margin_loss(logits, label, targeted, cfg.kappa)
        pred = int(logits.argmax(1))
        if (pred == target if targeted else pred != clean_pred) and float(perceptual.detach()) < best_loss:
            best, best_loss, best_it = y.detach()[0].numpy().copy(), float(perceptual), it + 1
        if cfg.patience and best is not None and it + 1 - best_it >= cfg.patience:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = it + 1
    out = best if best is not None else y.detach()[0].numpy()
    return out, {"iterations": last, "best_iteration": best_it, "perceptual": best_loss if best is not None else
                 float(perceptual.detach()), "found": best is not None}, gae.state_dict()


def fgsm(model: XVectorSID, wave: np.ndarray, label: int, eps: float) -> np.ndarray:
    return bim(model, wave, label, eps, steps=1, step=eps)


def bim(model: XVectorSID, wave: np.ndarray, label: int, eps: float, steps: int, step: float) -> np.ndarray:
    """`steps` signed-gradient ascent steps of size `step` on cross-entropy(label), projected into the L-infinity
    ball of radius eps around the wave and clipped to [-1, 1] (one step of eps: FGSM)."""
    x0 = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    adv, y = x0.clone(), torch.tensor([label])
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(adv[None]), y), adv)
        adv = torch.min(torch.max(adv.detach() + step * grad.sign(), x0 - eps), x0 + eps).clamp(-1, 1)
    return adv.detach().numpy()


def eps_for_snr(wave: np.ndarray, snr: float) -> float:
    """The L-infinity eps whose full-sign perturbation has this SNR: rms(x) 10^(-SNR / 20)."""
    return float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)) * 10 ** (-snr / 20))


def scored(model: XVectorSID, clean: np.ndarray, adv: np.ndarray, clean_pred: int, sample_rate: int,
           target: int | None = None) -> dict:
    """Metrics of the written (16-bit) adversarial wave."""
    adv = quantize(adv, sample_rate)
    pred = predict(model, adv)
    return {"pred": pred, "success": bool(pred == target if target is not None else pred != clean_pred),
            "snr_db": snr_db(clean, adv), "pesq": pesq_score(clean, adv, sample_rate),
            "stoi": stoi_score(clean, adv, sample_rate), "wave": adv}


def draw_target(num_classes: int, clean_pred: int, seed: int, index: int) -> int:
    """The targeted attack's speaker: uniform among the classes other than the clean prediction, from (seed, file)."""
    return int(np.random.default_rng([seed, index, 7]).choice([c for c in range(num_classes) if c != clean_pred]))


def attack_file(model: XVectorSID, wave: np.ndarray, label: int, fixed_target: int | None, cfg: AttackConfig,
                index: int, init_states: dict | None = None) -> tuple[dict, dict]:
    """Every configured attack on one file: ({"clean_pred", "label", mode: metrics + wave}, {mode: gae state}).
    `fixed_target`: the targeted attack's speaker index (None: drawn per file); a file whose clean prediction already
    is that speaker gets no targeted attack (recorded as None)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sr = model.front.sample_rate
    clean = quantize(wave, sr)
    clean_pred = predict(model, clean)
    target = draw_target(model.num_classes, clean_pred, cfg.seed, index) if fixed_target is None else fixed_target
    record, states = {"label": int(label), "clean_pred": clean_pred}, {}
    for m, mode in enumerate(cfg.modes):
        targeted = mode == "targeted"
        if targeted and target == clean_pred:
            record[mode] = None
            continue
        adv, info, states[mode] = foolhd(model, clean, clean_pred, cfg, targeted, target if targeted else None,
                                         [cfg.seed, index, m], (init_states or {}).get(mode))
        record[mode] = {**scored(model, clean, adv, clean_pred, sr, target if targeted else None), **info,
                        **({"target": int(target)} if targeted else {})}
    if cfg.baselines:
        snr = record["untargeted"]["snr_db"]
        eps = eps_for_snr(clean, snr if math.isfinite(snr) else 100.0)
        for name in cfg.baselines:
            adv = fgsm(model, clean, clean_pred, eps) if name == "fgsm" else \
                bim(model, clean, clean_pred, eps, cfg.bim_steps, eps / 5)
            record[name] = {**scored(model, clean, adv, clean_pred, sr), "eps": eps}
    return record, states
