"""Weakly-supervised sound event detection model (arXiv 2106.06858, as its official code
soham97/MTL_Weakly_labelled_audio_data): a CNN whose blocks end in a stride-1 3x3 average pool keeps the
full time x frequency resolution, a 1x1 conv gives a class map (B, C, T, F), and a pooling turns it into
frame-level activity (B, C, T) and clip probabilities (B, C) that are trained on clip (weak) labels
only. An optional auxiliary decoder reconstructs the (z-scored) input log-mel from the encoder's last
feature map; its MSE, weighted by alpha, is added to the clip BCE. The model z-scores its input with
per-mel-bin statistics of the training folds, kept as buffers so that a saved model scores with them.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

POOLINGS = ("two_step", "two_step_scalar", "time_attention", "average", "max")
_EPS = 1e-7  # probability clamp for BCE: log(1e-7) is finite in float32


class BoxPool3x3(nn.Module):
    """`nn.AvgPool2d(3, stride=1, padding=1)` (zeros padded and counted, /9) as two 3-tap sums: the same
    values to float rounding, forward + backward 1.8x faster on CPU than ATen's pooling loop (a
    (8, 32, 311, 64) map, one thread: 0.13 s vs 0.23 s), which took ~40 % of a width-4 model's step. On a GPU
    (not measured; the sums hold two more copies of the map) ATen's pooling itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return F.avg_pool2d(x, 3, stride=1, padding=1)
        p = F.pad(x, (1, 1, 1, 1))
        rows = p[..., :-2] + p[..., 1:-1] + p[..., 2:]
        return (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]) / 9


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU, then a 3x3 average pool of stride 1: resolution unchanged (no bias:
    BN's shift replaces it)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        BoxPool3x3())


def _he_uniform(module: nn.Module) -> None:
    """The official init of convolutions: uniform(+-sqrt(6 / fan_in)), zero bias."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class FrequencyAttention(nn.Module):
    """Frame activity (B, C, T) = sum_F sigmoid(Linear_F(x)) * softmax_F(Linear'_F(x)) over a class map
    x (B, C, T, F): a convex combination of per-bin probabilities, so it lies in [0, 1]."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.cla = nn.Linear(n_mels, n_mels)
        self.att = nn.Linear(n_mels, n_mels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(self.cla(x)) * torch.softmax(self.att(x), dim=-1)).sum(-1)


class FrameAttention(nn.Module):
    """The official time step: clip probability (B, C) = sum_T sigmoid(Linear_T(p)) * softmax_T(Linear'_T(p))
    over frame probabilities p (B, C, T). Linear(T, T) mixes frames, so the clip length is fixed."""

    def __init__(self, n_frames: int):
        super().__init__()
        self.n_frames = n_frames
        self.cla = nn.Linear(n_frames, n_frames)
        self.att = nn.Linear(n_frames, n_frames)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if p.shape[-1] != self.n_frames:
            raise ValueError(f"the two_step time attention was built for {self.n_frames} frames, got "
                             f"{p.shape[-1]}: every clip must have the same length (or use two_step_scalar)")
        return (torch.sigmoid(self.cla(p)) * torch.softmax(self.att(p), dim=-1)).sum(-1)


class TimeAttention(nn.Module):
    """This project's length-free time step: clip probability (B, C) = sum_T softmax_T(a_k u) *
    sigmoid(c_k u + d_k) over frame logits u (B, C, T), with per-class scalars a, c, d, so any T works.
    The attention has no bias because softmax is shift-invariant. Initialized a = c = 1, d = 0: at the
    start the clip probability is a softmax(u)-weighted mean of the frame probabilities sigmoid(u),
    between average and max pooling, instead of a random per-class mapping Adam would need many steps
    to undo."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.att_scale = nn.Parameter(torch.ones(num_classes, 1))
        self.cla_scale = nn.Parameter(torch.ones(num_classes, 1))
        self.cla_bias = nn.Parameter(torch.zeros(num_classes, 1))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.att_scale * u, dim=-1)
        return (att * torch.sigmoid(self.cla_scale * u + self.cla_bias)).sum(-1)


class SEDModel(nn.Module):
    """Encoder (channels 1 -> w -> 2w -> 4w -> 8w, w = width; 32 is the paper's) -> class map -> pooling.

    Poolings (frame activity (B, C, T); clip probability (B, C)):
      two_step        the official: FrequencyAttention; FrameAttention (Linear(T, T)) on that activity;
                      needs n_frames, the clip length in frames
      two_step_scalar this project's: FrequencyAttention; TimeAttention on the logit of that activity
      time_attention  sigmoid of the class map averaged over F; TimeAttention on that average
      average         sigmoid(class map) averaged over F; clip = its mean over T
      max             sigmoid(class map) max over F; clip = its max over T
    `forward(logmel, weak)` returns (loss, number of clips whose thresholded prediction is exactly the
    label vector, batch size) for the training loop. Input log-mels (B, T, F) are z-scored here with
    feature_mean / feature_std (per mel bin; default 0 / 1).
    """

    def __init__(self, num_classes: int, n_mels: int = 64, width: int = 32, pooling: str = "two_step",
                 aux_decoder: bool = True, alpha: float = 0.001, n_frames: int | None = None,
                 feature_mean=None, feature_std=None):
        super().__init__()
        self.num_classes = _positive_int("num_classes", num_classes)
        self.n_mels = _positive_int("n_mels", n_mels)
        width = _positive_int("width", width)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        try:
            self.alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}") from None
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        self.pooling = pooling
        if pooling == "two_step":
            n_frames = _positive_int("n_frames (frames per clip, for the two_step time attention)", n_frames)
        self.register_buffer("feature_mean", torch.zeros(self.n_mels) if feature_mean is None
                             else torch.as_tensor(feature_mean, dtype=torch.float32).reshape(self.n_mels))
        self.register_buffer("feature_std", torch.ones(self.n_mels) if feature_std is None
                             else torch.as_tensor(feature_std, dtype=torch.float32).reshape(self.n_mels))

        chans = [1, width, 2 * width, 4 * width, 8 * width]
        self.encoder = nn.Sequential(*(_conv_block(a, b) for a, b in zip(chans, chans[1:])))
        self.classifier = nn.Conv2d(chans[-1], self.num_classes, 1)
        self.decoder = None
        if aux_decoder:
            back = chans[:0:-1] + [1]  # 8w, 4w, 2w, w, 1
            # as the official decoder, the last block too ends in BN + ReLU (+ pool): its output is >= 0
            self.decoder = nn.Sequential(*(_conv_block(a, b) for a, b in zip(back, back[1:])))
        self.apply(_he_uniform)
        self.freq_att = FrequencyAttention(self.n_mels) if pooling.startswith("two_step") else None
        self.time_att = (FrameAttention(n_frames) if pooling == "two_step"
                         else TimeAttention(self.num_classes) if pooling in ("two_step_scalar", "time_attention")
                         else None)

    def normalize(self, logmel: torch.Tensor) -> torch.Tensor:
        if logmel.dim() != 3 or logmel.shape[-1] != self.n_mels:
            raise ValueError(f"log-mel must be (batch, frames, {self.n_mels} mel bins), got {tuple(logmel.shape)}")
        return (logmel - self.feature_mean) / self.feature_std

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.unsqueeze(1))

    def _pool(self, class_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip (B, C), frame (B, C, T)) in [0, 1] from the class map (B, C, T, F). The clamps only
        undo rounding: each pooling is in [0, 1] by construction."""
        if self.pooling == "two_step":
            frame = self.freq_att(class_map)
            clip = self.time_att(frame)
        elif self.pooling == "two_step_scalar":
            frame = self.freq_att(class_map)
            clip = self.time_att(torch.logit(frame, eps=1e-6))
        elif self.pooling == "time_attention":
            u = class_map.mean(-1)
            frame, clip = torch.sigmoid(u), self.time_att(u)
        elif self.pooling == "average":
            frame = torch.sigmoid(class_map).mean(-1)
            clip = frame.mean(-1)
        else:
            frame = torch.sigmoid(class_map).amax(-1)
            clip = frame.amax(-1)
        return clip.clamp(0.0, 1.0), frame.clamp(0.0, 1.0)

    def predict(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip probabilities (B, C), frame probabilities (B, T, C)); no_grad is the caller's choice."""
        clip, frame = self._pool(self.classifier(self._features(self.normalize(logmel))))
        return clip, frame.transpose(1, 2)

    def reconstruct(self, logmel: torch.Tensor) -> torch.Tensor:
        """The auxiliary decoder's reconstruction (B, T, F) of the z-scored input log-mel."""
        if self.decoder is None:
            raise RuntimeError("this SEDModel was built with aux_decoder=False")
        return self.decoder(self._features(self.normalize(logmel))).squeeze(1)

    def forward(self, logmel: torch.Tensor, weak: torch.Tensor):
        x = self.normalize(logmel)
        h = self._features(x)
        clip, _ = self._pool(self.classifier(h))
        target = weak.float()
        loss = clip_bce(clip, target)
        if self.decoder is not None:
            loss = loss + self.alpha * F.mse_loss(self.decoder(h).squeeze(1).float(), x.float())
        with torch.no_grad():
            correct = ((clip.detach() > 0.5) == (target > 0.5)).all(dim=1).sum()
        return loss, correct, logmel.shape[0]

    def extra_repr(self):
        return (f"num_classes={self.num_classes}, n_mels={self.n_mels}, pooling={self.pooling}, "
                f"alpha={self.alpha:g}")


def clip_bce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of probabilities, in float32 with probs clamped to [1e-7, 1 - 1e-7]
    (written out: F.binary_cross_entropy refuses to run under autocast)."""
    p = prob.float().clamp(_EPS, 1.0 - _EPS)
    t = target.float()
    return -(t * torch.log(p) + (1.0 - t) * torch.log1p(-p)).mean()
