"""Hand-written attention with a finite additive bias for absent tokens.

No `nn.MultiheadAttention` / `nn.TransformerEncoder`: their key-padding masks export a -inf constant and a
fully masked row turns into NaN (FIELD-NOTES). Here an absent key gets MASK_BIAS = -1e4 (fits FP16); the CLS
token is never absent, so every softmax row has a finite maximum and masked keys get weight exactly 0 in FP32.
"""

from __future__ import annotations

import torch
from torch import nn

MASK_BIAS = -1.0e4


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, Nq, D) attends to context (B, Nk, Dk); bias (B, 1, 1, Nk) is 0 or MASK_BIAS."""
        b, nq, d = x.shape
        nk = context.shape[1]
        q = self.q(x).reshape(b, nq, self.heads, self.head_dim).transpose(1, 2)  # (B, H, Nq, Dh)
        kv = self.kv(context).reshape(b, nk, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # (B, H, Nk, Dh)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # (B, H, Nq, Nk)
        if bias is not None:
            scores = scores + bias
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, nq, d)  # (B, Nq, D)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), x + mlp(norm(x)).

    Dropout only on the two residual branches: on CPU, dropout over attention weights and the MLP hidden
    layer cost more time than the matmuls around them (profiled: 28% of a teacher step).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D); with `queries`, only the first `queries` rows come out, each equal to that
        row of the full output (every token still serves as key and value). The backbone's last block needs
        only the CLS row: this skips the attention queries and the MLP of every other token."""
        h = self.norm1(x)
        q = h if queries is None else h[:, :queries]
        x = (x if queries is None else x[:, :queries]) + self.drop(self.attn(q, h, bias))
        return x + self.drop(self.mlp(self.norm2(x)))


def key_bias(present: torch.Tensor) -> torch.Tensor:
    """(B, N) bool, True = present -> (B, 1, 1, N) additive attention bias: 0 or MASK_BIAS."""
    return ((1.0 - present.float()) * MASK_BIAS).reshape(present.shape[0], 1, 1, -1)


class Resampler(nn.Module):
    """K learned queries cross-attend to one modality's tokens: (B, N, D) -> (B, K, D).

    Absent tokens get the key bias, so they have weight 0 as long as one token is present. With none present
    every weight is equal (finite, no NaN) and the backbone masks the K outputs, as for an absent modality.
    """

    def __init__(self, dim: int, queries: int, heads: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q = self.queries.expand(tokens.shape[0], -1, -1)
        x = q + self.attn(q, self.norm(tokens), bias)
        return x + self.mlp(x)
