"""The audio-visual transformer for main-speaker detection (arXiv 2108.03256) and its two ablations.

What the paper states: audio and visual tokens over spatio-temporal segments, related by Transformer
self-attention instead of a direct audio-visual association; relations across temporal segments and
between speakers are modelled; outputs localize the main speaker in the frames and highlight their voice in
the audio. The layer sizes, the token CNNs, the attention layout, the mask head and the losses below are this
project's design (the official repository holds no code): docs/faithfulness.md.

Tokens:  audio  a[s]    = CNN over the log-mel patch of segment s (L frames x n_mels)        (B, S, D)
         visual v[k, s] = CNN over the F grayscale face crops of track k in segment s          (B, N, S, D)
         + a learned embedding of the segment index (time) on both.
Variants (`variant`):
    transformer   the paper's: `layers` blocks of [AV cross-attention (each visual token queries every audio
                  token), self-attention over the N x S visual tokens factorized as temporal attention (within a
                  track, across segments) then speaker-interaction attention (across tracks, within a segment),
                  feed-forward]
    no_temporal   ablation: the same blocks without the temporal attention and with the cross-attention confined
                  to the token's own segment (a visual token sees only its segment's audio and the other tracks'
                  tokens of that segment)
    concat        ablation: no transformer; MLP([v[k, s]; a[s]]): a direct audio-visual concatenation per pair
Outputs: a main-speaker logit per (track, segment), and a time-frequency mask over the mixture's STFT
(512-point, hop 160): mask[f, t] = sigmoid(MLP([x[t]; c[s(t)]])) with x[t] a conv feature of the log-magnitude
frame and c[s] = sum_k softmax_k(logit[k, s]) h[k, s] the attended main speaker's output token, so the audio
is highlighted where (and as) the visual detection points.
Losses: BCE of the logits against "track k holds the turn in segment s" over real tracks, plus
`mask_weight` x (-SI-SDR) of the masked mixture against the main speaker's clean voice where that is known.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = ("transformer", "no_temporal", "concat")
N_FFT, HOP = 512, 160
MAX_SEGMENTS = 64


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB over the last axis (Le Roux et al. 2019): with e the zero-mean estimate and s the
    zero-mean reference, a = <e, s> / <s, s>, SI-SDR = 10 log10(|a s|^2 / |e - a s|^2)."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    a = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = a * ref
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / ((est - target).pow(2).sum(-1) + eps))


def _conv_tower(in_ch: int, dim: int) -> nn.Sequential:
    """Three strided conv-BN-ReLU stages, global average pool, linear to `dim`."""
    chans = (in_ch, 16, 32, 64)
    layers: list[nn.Module] = []
    for a, b in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, dim))


class AVBlock(nn.Module):
    """Pre-norm, on the N x S visual tokens flattened track-major: v += CrossAttn(v, audio tokens);
    v += TemporalAttn(v) (each token with the tokens of its own track, across segments: what was said before);
    v += InteractionAttn(v) (each token with the other tracks' tokens of its segment: who else speaks now);
    v += FFN(v). The ablation without temporal attention drops the temporal step and confines the cross-attention
    to the token's own segment."""

    def __init__(self, dim: int, heads: int, dropout: float, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.norm_q, self.norm_kv, self.norm_i, self.norm_f = (nn.LayerNorm(dim) for _ in range(4))
        self.cross = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.interact = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        if temporal:
            self.norm_t = nn.LayerNorm(dim)
            self.time = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, v, a, masks: dict, pad):
        kv = self.norm_kv(a)
        v = v + self.cross(self.norm_q(v), kv, kv, attn_mask=masks["cross"], need_weights=False)[0]
        if self.temporal:   # no key padding here: a padded track attends to its own (finite) tokens only
            q = self.norm_t(v)
            v = v + self.time(q, q, q, attn_mask=masks["time"], need_weights=False)[0]
        q = self.norm_i(v)
        v = v + self.interact(q, q, q, attn_mask=masks["interact"], key_padding_mask=pad, need_weights=False)[0]
        return v + self.ffn(self.norm_f(v))


class AVSpeakerNet(nn.Module):
    def __init__(self, variant: str = "transformer", dim: int = 64, heads: int = 4, layers: int = 2,
                 frames: int = 4, dropout: float = 0.1, mask_weight: float = 0.1):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown model.variant {variant!r}; choose from {', '.join(VARIANTS)}")
        if dim % heads:
            raise ValueError(f"model.dim={dim} must be a multiple of model.heads={heads}")
        self.variant, self.mask_weight = variant, mask_weight
        self.mel_norm = nn.BatchNorm2d(1)
        self.audio = _conv_tower(1, dim)
        self.face = _conv_tower(frames, dim)
        self.pos = nn.Parameter(torch.randn(MAX_SEGMENTS, dim) * 0.02)
        if variant == "concat":
            self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        else:
            self.blocks = nn.ModuleList(AVBlock(dim, heads, dropout, variant == "transformer") for _ in range(layers))
            self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)
        bins = N_FFT // 2 + 1
        self.spec = nn.Sequential(nn.Conv1d(bins, dim, 3, padding=1), nn.ReLU(), nn.Conv1d(dim, dim, 3, padding=1))
        self.mask_head = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, bins))

    # ------------------------------------------------------------------ detection
    def detect(self, faces: torch.Tensor, mel: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, N, S), output tokens (B, N, S, D)) of faces uint8 (B, N, S, F, C, C), log-mel (B, S, L, M)
        and the real-track mask valid (B, N)."""
        b, n, s, f, c, _ = faces.shape
        v = self.face(faces.reshape(b * n * s, f, c, c).float() / 255.0).view(b, n, s, -1)
        # normalized by a BatchNorm (running statistics at test time), not per window: a window-wide mean would
        # let one segment's audio reach every other segment's token in the ablations without temporal context
        a = self.audio(self.mel_norm(mel.reshape(b * s, 1, *mel.shape[2:]))).view(b, s, -1)
        pos = self.pos[:s]
        v, a = v + pos, a + pos
        if self.variant == "concat":
            h = self.fuse(torch.cat([v, a[:, None].expand(-1, n, -1, -1)], dim=-1))
        else:
            seg = torch.arange(s, device=v.device).repeat(n)              # segment of each flattened visual token
            track = torch.arange(n, device=v.device).repeat_interleave(s)  # and its track
            pad = ~valid[:, :, None].expand(-1, -1, s).reshape(b, n * s)
            masks = {"time": track[:, None] != track[None, :],           # True = may not attend
                     "interact": seg[:, None] != seg[None, :],
                     "cross": (seg[:, None] != torch.arange(s, device=v.device)[None, :]
                               if self.variant == "no_temporal" else None)}
            h = v.reshape(b, n * s, -1)
            for block in self.blocks:
                h = block(h, a, masks, pad)
            h = self.norm(h).view(b, n, s, -1)
        return self.score(h).squeeze(-1), h

    # ------------------------------------------------------------------ highlighting
    def highlight(self, mix: torch.Tensor, logits: torch.Tensor, h: torch.Tensor, valid: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask (B, bins, T), highlighted waveform (B, samples)) of the mixture (B, samples)."""
        window = torch.hann_window(N_FFT, device=mix.device)
        spec = torch.stft(mix, N_FFT, HOP, window=window, return_complex=True)
        x = self.spec(torch.log1p(spec.abs() * 10))                      # (B, D, T)
        weights = torch.softmax(logits.masked_fill(~valid[:, :, None], -1e4), dim=1)   # over tracks
        ctx = (weights[..., None] * h).sum(dim=1)                        # (B, S, D)
        t = spec.shape[-1]
        s = logits.shape[-1]
        seg_of_frame = torch.clamp(torch.arange(t, device=mix.device) * s // t, max=s - 1)
        z = torch.cat([x.transpose(1, 2), ctx[:, seg_of_frame]], dim=-1)  # (B, T, 2D)
        mask = torch.sigmoid(self.mask_head(z)).transpose(1, 2)
        est = torch.istft(spec * mask, N_FFT, HOP, window=window, length=mix.shape[-1])
        return mask, est

    def forward(self, faces, mel, mix, main, roles, valid, main_id, has_main):
        valid = valid.bool()
        logits, h = self.detect(faces, mel, valid)
        target = (roles == 1).float()
        w = valid[:, :, None].expand_as(logits).float()
        loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / w.sum()
        if self.mask_weight > 0:
            keep = has_main.bool() & (main.pow(2).mean(-1) > 1e-6)
            if keep.any():
                _, est = self.highlight(mix[keep], logits[keep], h[keep], valid[keep])
                loss = loss - self.mask_weight * si_sdr(est, main[keep]).mean()
        pick = logits.masked_fill(~valid[:, :, None], -1e4).argmax(dim=1)
        known = main_id >= 0
        return loss, ((pick == main_id) & known).sum(), int(known.sum())
