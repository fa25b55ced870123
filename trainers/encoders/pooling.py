"""What the speaker encoders share: statistics pooling (TSTP) and the embedding layers on top of it."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def stats_pool(x: torch.Tensor) -> torch.Tensor:
    """TSTP: concat(mean, std) over the last (time) axis, all other axes flattened.

    Unbiased variance plus 1e-7 inside the sqrt as WeSpeaker; a single frame would make the
    unbiased variance NaN, so then the biased one (0) is used instead.
    """
    var = torch.var(x, dim=-1, correction=1 if x.shape[-1] > 1 else 0)
    return torch.cat([x.mean(dim=-1).flatten(1), torch.sqrt(var + 1e-7).flatten(1)], dim=1)



class SegmentLayers(nn.Module):
    """Pooled stats -> seg_1 [-> ReLU -> BN(affine=False) -> seg_2]; the last output is the
    embedding (as WeSpeaker, which feeds the head with its second output when there are two)."""

    def __init__(self, in_dim: int, embed_dim: int, two_emb_layer: bool):
        super().__init__()
        self.seg_1 = nn.Linear(in_dim, embed_dim)
        self.two_emb_layer = two_emb_layer
        if two_emb_layer:
            self.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
            self.seg_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, stats):
        out = self.seg_1(stats)
        return self.seg_2(self.seg_bn_1(F.relu(out))) if self.two_emb_layer else out
