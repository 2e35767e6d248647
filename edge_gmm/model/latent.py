"""Latent fusion: a CLS latent cross-attends, layer after layer, to keys and values each token owns.

The backbone fusion (gmm.GMM.fuse) runs self-attention over every cached token for every prediction, so its
cost per prediction grows with the window's tokens, whatever the prediction rate. Here no token ever attends
to another: each token's keys and values for every layer are a function of that token alone (its projected
features and its modality), plus a learned offset per window slot that says where in the window it sits:

    kv_i   = Linear(LayerNorm(token_i + modality_emb))        (per token: computable once, when it arrives)
    K, V   = kv_i + slot_kv[m][slot_i]                        (per prediction: one add per cached token)
    cls    = cls + CrossAttn_l(cls, K_l, V_l); cls = cls + MLP_l(cls)      for each layer l
    emb    = LayerNorm(cls)

A learned null key/value per layer is always present, so a window with every token masked still has a finite
softmax (it attends to the null slot only). A masked token's keys and values are replaced by zeros and get
MASK_BIAS, so it has weight exactly 0 (as in the backbone).
"""

from __future__ import annotations

import torch
from torch import nn

from edge_gmm.model.attention import key_bias


class LatentLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.norm_q = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, cls: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """cls (B, 1, D); k, v (B, N, D); bias (B, 1, 1, N) -> (B, 1, D)."""
        b, n, d = k.shape
        h, dh = self.heads, self.head_dim
        q = self.q(self.norm_q(cls)).reshape(b, 1, h, dh).transpose(1, 2)  # (B, H, 1, Dh)
        k = k.reshape(b, n, h, dh).transpose(1, 2)
        v = v.reshape(b, n, h, dh).transpose(1, 2)
        w = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * dh**-0.5 + bias, dim=-1)  # (B, H, 1, N)
        out = torch.matmul(w, v).transpose(1, 2).reshape(b, 1, d)
        cls = cls + self.drop(self.proj(out))
        return cls + self.drop(self.mlp(self.norm_mlp(cls)))


class LatentFusion(nn.Module):
    """Tokens (B, N_m, D) per modality + per-token masks -> the fused CLS embedding (B, D)."""

    def __init__(self, modalities: list[str], token_counts: dict[str, int], dim: int, depth: int, heads: int,
                 mlp_ratio: float, dropout: float):
        super().__init__()
        self.modalities, self.dim, self.depth = list(modalities), dim, depth
        self.modality_emb = nn.Parameter(torch.randn(len(modalities), dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim * depth)  # every layer's K and V of one token
        self.slot_kv = nn.ParameterList([nn.Parameter(torch.randn(1, token_counts[m], 2 * dim * depth) * 0.02)
                                         for m in modalities])
        self.null_kv = nn.Parameter(torch.zeros(1, 1, 2 * dim * depth))
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.layers = nn.ModuleList([LatentLayer(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(dim)

    @property
    def kv_dim(self) -> int:
        return 2 * self.dim * self.depth

    def token_kv(self, modality: str, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) projected tokens of one modality -> (B, N, 2 * D * depth): what a token owns, slot-free."""
        i = self.modalities.index(modality)
        return self.kv(self.norm(tokens + self.modality_emb[i]))

    def token_kv_module(self, modality: str) -> nn.Module:
        """token_kv bound to one modality, for that modality's encoder graph."""
        return _TokenKV(self, modality)

    def forward(self, kv: dict[str, torch.Tensor], keep: dict[str, torch.Tensor]) -> torch.Tensor:
        """kv[m] (B, N_m, 2 * D * depth) from token_kv, keep[m] (B, N_m) bool -> (B, D)."""
        first = next(iter(keep.values()))
        b = first.shape[0]
        parts, present = [self.null_kv.expand(b, -1, -1)], [torch.ones_like(first[:, :1], dtype=torch.bool)]
        for i, m in enumerate(self.modalities):
            x = kv[m] + self.slot_kv[i]
            parts.append(torch.where(keep[m][..., None], x, torch.zeros_like(x)))  # a stale or NaN slot cannot leak
            present.append(keep[m])
        allkv = torch.cat(parts, dim=1)  # (B, 1 + sum N_m, 2 * D * depth)
        bias = key_bias(torch.cat(present, dim=1))
        cls = self.cls.expand(b, -1, -1)
        d = self.dim
        for layer_index, layer in enumerate(self.layers):
            k = allkv[..., 2 * d * layer_index : 2 * d * layer_index + d]
            v = allkv[..., 2 * d * layer_index + d : 2 * d * (layer_index + 1)]
            cls = layer(cls, k, v, bias)
        return self.out_norm(cls[:, 0])


class _TokenKV(nn.Module):
    def __init__(self, fusion: LatentFusion, modality: str):
        super().__init__()
        self.fusion, self.modality = fusion, modality

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fusion.token_kv(self.modality, tokens)
