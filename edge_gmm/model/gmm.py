"""The generalist multimodal model: tokenizers -> compact encoders -> projector -> backbone -> heads.

    inputs[m] (raw, model layout) --frontend--> features[m] --tokenizer--> (B, N_m, enc)
        --projector--> (B, N_m, D) [--token mixer--> (B, N_m, D)] [--resampler--> (B, K, D)]
        + modality + time embeddings
    [CLS | tokens of every modality] (B, 1 + sum N_m, D) --backbone (masked)--> CLS (B, D) --heads--> logits

With `fusion = "latent"` (the default student, model/latent.py) the bracketed stages and the backbone are
replaced by a CLS latent that cross-attends to per-token keys/values plus per-slot offsets.

`mask` (B, M) says which modalities are present. An absent modality's raw values are replaced by zeros
first (so NaN/inf fed for it cannot leak), and its tokens get a -1e4 key bias in every attention layer,
so they contribute exactly nothing to the CLS token. All shapes are static for a given batch size.

Streaming split (the same weights, the same outputs as `forward`):
- `stream_layout()[m]`: a `StreamLayout` — token j of a window reads samples [j * hop, j * hop + span) of
  modality m (camera: its one frame); `tokens` per window, `per_call` per encoder call, `call_shape`.
- `token_encoder(m)`: raw samples of one call (B, *call_shape) -> (B, per_call, token_dim) cached tokens
  (front end, normalization, encoder, projector; no resampler, no embeddings; with `fusion = "latent"`, the
  token's keys and values for every fusion layer, model/latent.py: token_dim = 2 * D * depth).
- `fusion()`: `forward(*tokens, *masks)`, tokens[m] (B, tokens_m, token_dim) and a per-token mask (B, tokens_m)
  per modality in modality order -> (logits_<task>..., embedding): token mixers, resamplers, embeddings,
  backbone, heads. A masked token's values never reach the outputs (it enters the token mixer as zeros and
  gets attention weight 0); all of a modality's tokens masked is exactly that modality absent in `forward`.
"""

from __future__ import annotations

import keyword
import re

import torch
from torch import nn

from edge_gmm.config import ModelSpec, SensorSpec, TaskSpec, WindowSpec
from edge_gmm.errors import ConfigError
from edge_gmm.model.attention import Block, Resampler, key_bias
from edge_gmm.model.heads import HEADS
from edge_gmm.model.latent import LatentFusion
from edge_gmm.model.presets import resolve
from edge_gmm.model.tokenizers import TOKENIZERS, ConvBlock, StreamLayout


def _projector(kind: str, enc: int, dim: int) -> nn.Module:
    # No LayerNorm in front: a token is nearly linear in its patch, and normalizing it per token would
    # erase the amplitude that carries the signal (vibration level, temperature, current).
    if kind == "mlp":
        return nn.Sequential(nn.Linear(enc, dim), nn.GELU(), nn.Linear(dim, dim))
    if kind == "linear":
        return nn.Linear(enc, dim)
    raise ConfigError(f"unknown projector {kind!r}; choose 'linear' or 'mlp'")


class TokenMixer(nn.Module):
    """Residual depthwise conv blocks (kernel 3) along a modality's token axis, in the fusion part: (B, N, D).

    The encoders keep each token to its own span (streaming), so the local mixing of neighbouring tokens that
    their blocks did before happens here, over the window's cached tokens (GunPoint, seed 0: INT8 student
    74 % without it, 83 % with it)."""

    def __init__(self, dim: int, blocks: int):
        super().__init__()
        self.blocks = nn.Sequential(*[ConvBlock(dim, 1) for _ in range(blocks)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks(tokens.transpose(1, 2)).transpose(1, 2)  # (B, N, D)


class GMM(nn.Module):
    def __init__(self, preset_name: str, sensors: list[SensorSpec], window: WindowSpec, tasks: list[TaskSpec],
                 spec: ModelSpec | None = None):
        super().__init__()
        spec = spec or ModelSpec()
        if not sensors:
            raise ConfigError("a model needs at least one modality")
        if not tasks:
            raise ConfigError("a model needs at least one task")
        for s in sensors:
            if not s.name.isidentifier():
                raise ConfigError(f"modality name {s.name!r} must be a Python identifier (letters, digits, _)")
        self.preset_name = preset_name
        self.preset = p = resolve(preset_name, spec)
        self.sensors, self.window, self.tasks = list(sensors), window, list(tasks)
        self.modalities = [s.name for s in sensors]
        d = p.d_model

        self.tokenizers = _ByName({s.name: TOKENIZERS.get(s.kind)(s, window, p) for s in sensors})
        self.projectors = _ByName({m: _projector(p.projector, p.enc_dim, d) for m in self.modalities})
        self.mixers = _ByName()  # for tokens that form a time sequence (one per encoder call); not camera patches
        self.resamplers = _ByName()
        self.token_counts: dict[str, int] = {}
        if p.fusion == "latent":
            self.token_counts = {m: self.tokenizers[m].n_tokens for m in self.modalities}
            self.latent = LatentFusion(self.modalities, self.token_counts, d, p.depth, p.heads, p.mlp_ratio,
                                       spec.dropout)
        elif p.fusion == "backbone":
            self._build_backbone(p, spec.dropout)
        else:
            raise ConfigError(f"unknown fusion {p.fusion!r}; choose 'backbone' or 'latent'")
        self.heads = _ByName({t.name: HEADS.get(t.type)(t, d) for t in self.tasks})

    def _build_backbone(self, p, dropout: float) -> None:
        """Token mixers, resamplers, time/modality embeddings, CLS and transformer blocks (fusion "backbone")."""
        d = p.d_model
        for m in self.modalities:
            n = self.tokenizers[m].n_tokens
            if self.tokenizers[m].stream_layout().per_call == 1 and n > 1:
                self.mixers[m] = TokenMixer(d, p.enc_blocks)
            if p.resampler_queries and n > p.resampler_queries:
                self.resamplers[m] = Resampler(d, p.resampler_queries, p.heads)
                n = p.resampler_queries
            self.token_counts[m] = n
        self.time_emb = _ParamsByName(
            {m: nn.Parameter(torch.randn(1, n, d) * 0.02) for m, n in self.token_counts.items()}
        )
        self.modality_emb = nn.Parameter(torch.randn(len(self.modalities), d) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.blocks = nn.ModuleList([Block(d, p.heads, p.mlp_ratio, dropout) for _ in range(p.depth)])
        self.norm = nn.LayerNorm(d)

    # ------------------------------------------------------------------ names and shapes
    @property
    def input_names(self) -> list[str]:
        return self.modalities + ["mask"]

    @property
    def output_names(self) -> list[str]:
        return [f"logits_{t.name}" for t in self.tasks] + ["embedding"]

    @property
    def embed_dim(self) -> int:
        return self.preset.d_model

    @property
    def token_dim(self) -> int:
        """The width of one cached token (an encoder call's output): the projected token, or with latent fusion
        every layer's key and value of it."""
        return self.latent.kv_dim if self.preset.fusion == "latent" else self.preset.d_model

    def input_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        shapes = {m: (batch, *self.tokenizers[m].input_shape) for m in self.modalities}
        shapes["mask"] = (batch, len(self.modalities))
        return shapes

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        shapes = self.input_shapes(batch)
        inputs = {}
        for s in self.sensors:
            x = torch.rand(shapes[s.name], generator=g)
            inputs[s.name] = x * 2 - 1 if s.kind == "audio" else x  # audio in [-1, 1], the rest in [0, 1]
        return inputs, torch.ones(shapes["mask"])

    # ------------------------------------------------------------------ forward
    def featurize(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw model-layout inputs -> fixed front-end features (log-mel for audio); absent modalities zeroed."""
        feats = {}
        for i, m in enumerate(self.modalities):
            x = inputs[m]
            present = mask[:, i].reshape((-1,) + (1,) * (x.dim() - 1)) > 0.5
            feats[m] = self.tokenizers[m].frontend(torch.where(present, x, torch.zeros_like(x)))
        return feats

    def encode_tokens(self, feats: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Front-end features -> projected tokens (B, N_m, D) per modality; absent modalities' features zeroed."""
        tokens = {}
        for i, m in enumerate(self.modalities):
            f = feats[m]
            present = mask[:, i].reshape((-1,) + (1,) * (f.dim() - 1)) > 0.5
            tokens[m] = self.projectors[m](self.tokenizers[m](torch.where(present, f, torch.zeros_like(f))))
        return tokens

    def fuse(self, tokens: dict[str, torch.Tensor], token_mask: dict[str, torch.Tensor],
             return_tokens: bool = False) -> dict[str, torch.Tensor]:
        """Tokens (B, N_m, D) and per-token masks (B, N_m) -> outputs: token mixer, resampler, embeddings,
        backbone, heads."""
        if self.preset.fusion == "latent":
            return self._fuse_latent(tokens, token_mask, return_tokens)
        first = next(iter(token_mask.values()))
        seq = [self.cls.expand(first.shape[0], -1, -1)]
        present = [torch.ones_like(first[:, :1], dtype=torch.bool)]  # (B, 1) the CLS key
        pooled: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.modalities):
            keep = token_mask[m] > 0.5  # (B, N_m)
            t = torch.where(keep[..., None], tokens[m], torch.zeros_like(tokens[m]))  # a stale or NaN slot cannot leak
            if m in self.mixers:
                t = self.mixers[m](t)
            if m in self.resamplers:
                t = self.resamplers[m](t, key_bias(keep))  # (B, K, D)
                # a query is present if any token is; a sum, not any(): any() exports as ReduceMax, whose axes
                # input the opset 18 -> 17 converter (TensorRT 8.5 targets) cannot turn back into an attribute
                keep = (keep.to(t.dtype).sum(dim=1, keepdim=True) > 0.5).expand(-1, t.shape[1])
            seq.append(t + self.time_emb[m] + self.modality_emb[i])
            present.append(keep)
            if return_tokens:  # per-modality pooled tokens (B, D), for training-time auxiliary heads
                pooled[m] = t.mean(dim=1)
        x = torch.cat(seq, dim=1)  # (B, 1 + sum N_m, D)
        bias = key_bias(torch.cat(present, dim=1))  # (B, 1, 1, 1 + sum N_m)
        for i, block in enumerate(self.blocks):
            x = block(x, bias, queries=1 if i == len(self.blocks) - 1 else None)  # only the CLS row is read
        emb = self.norm(x[:, 0])  # (B, D) fused CLS embedding
        out = {f"logits_{t.name}": self.heads[t.name](emb) for t in self.tasks}
        out["embedding"] = emb
        for m, v in pooled.items():
            out[f"pooled_{m}"] = v
        return out

    def _fuse_latent(self, tokens: dict[str, torch.Tensor], token_mask: dict[str, torch.Tensor],
                     return_tokens: bool) -> dict[str, torch.Tensor]:
        out = self.fuse_cached({m: self.latent.token_kv(m, tokens[m]) for m in self.modalities}, token_mask)
        for m in self.modalities if return_tokens else []:
            keep = token_mask[m] > 0.5
            out[f"pooled_{m}"] = torch.where(keep[..., None], tokens[m], torch.zeros_like(tokens[m])).mean(dim=1)
        return out

    def fuse_cached(self, cached: dict[str, torch.Tensor], token_mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The fusion graph's forward: what the token cache holds (B, N_m, token_dim) per modality -> outputs."""
        if self.preset.fusion != "latent":
            return self.fuse(cached, token_mask)
        emb = self.latent(cached, {m: token_mask[m] > 0.5 for m in self.modalities})
        out = {f"logits_{t.name}": self.heads[t.name](emb) for t in self.tasks}
        out["embedding"] = emb
        return out

    def forward_features(self, feats: dict[str, torch.Tensor], mask: torch.Tensor,
                         return_tokens: bool = False) -> dict[str, torch.Tensor]:
        tokens = self.encode_tokens(feats, mask)
        token_mask = {m: mask[:, i : i + 1].expand(-1, tokens[m].shape[1]) for i, m in enumerate(self.modalities)}
        return self.fuse(tokens, token_mask, return_tokens)

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(self.featurize(inputs, mask), mask)

    # ------------------------------------------------------------------ streaming split
    def stream_layout(self) -> dict[str, StreamLayout]:
        return {m: self.tokenizers[m].stream_layout() for m in self.modalities}

    def token_encoder(self, modality: str) -> nn.Module:
        kv = self.latent.token_kv_module(modality) if self.preset.fusion == "latent" else nn.Identity()
        return TokenEncoder(self.tokenizers[modality], self.projectors[modality], kv)

    def fusion(self) -> nn.Module:
        return Fusion(self)

    # ------------------------------------------------------------------ helpers
    @torch.no_grad()
    def set_norm_stats(self, feats: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        """Per-channel normalization statistics from training features (windows where the modality is present)."""
        for i, m in enumerate(self.modalities):
            self.tokenizers[m].set_stats(feats[m][mask[:, i] > 0.5])

    def export_wrapper(self) -> nn.Module:
        """Positional forward for ONNX export: args in `input_names` order, outputs in `output_names` order."""
        return PositionalGMM(self)

    def describe(self) -> dict:
        return {
            "preset": self.preset_name,
            "parameters": sum(p.numel() for p in self.parameters()),
            "tokens": dict(self.token_counts),
            "d_model": self.preset.d_model,
            "depth": self.preset.depth,
        }


class PositionalGMM(nn.Module):
    """forward(*modalities, mask) -> (logits_<task>..., embedding), the order of GMM.input/output_names."""

    def __init__(self, gmm: GMM):
        super().__init__()
        self.gmm = gmm
        self.input_names = gmm.input_names
        self.output_names = gmm.output_names

    def forward(self, *args: torch.Tensor):
        inputs = dict(zip(self.gmm.modalities, args[:-1]))
        out = self.gmm(inputs, args[-1])
        return tuple(out[name] for name in self.output_names)


class TokenEncoder(nn.Module):
    """One modality's encoder call: raw samples (B, *call_shape) -> cached tokens (B, per_call, token_dim)."""

    def __init__(self, tokenizer: nn.Module, projector: nn.Module, cache_form: nn.Module):
        super().__init__()
        self.tokenizer, self.projector, self.cache_form = tokenizer, projector, cache_form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cache_form(self.projector(self.tokenizer(self.tokenizer.frontend(x))))


class Fusion(nn.Module):
    """forward(*tokens, *masks) -> (logits_<task>..., embedding): tokens_<m> (B, N_m, D), then mask_<m> (B, N_m)."""

    def __init__(self, gmm: GMM):
        super().__init__()
        self.gmm = gmm
        self.input_names = [f"tokens_{m}" for m in gmm.modalities] + [f"mask_{m}" for m in gmm.modalities]
        self.output_names = gmm.output_names

    def forward(self, *args: torch.Tensor):
        n = len(self.gmm.modalities)
        tokens = dict(zip(self.gmm.modalities, args[:n]))
        masks = dict(zip(self.gmm.modalities, args[n:]))
        out = self.gmm.fuse_cached(tokens, masks)
        return tuple(out[name] for name in self.output_names)


def build_model(preset: str, sensors: list[SensorSpec], window: WindowSpec, tasks: list[TaskSpec],
                spec: ModelSpec | None = None) -> GMM:
    """The one factory: a GMM of preset `preset` (see PRESETS) for these modalities and tasks."""
    return GMM(preset, sensors, window, tasks, spec)


def _key(name: str) -> str:
    """A user's modality or task name as a submodule key. torch.export writes Python source with these names as
    attributes, so a keyword ('class', a UEA task) or a non-identifier ('temp-1') would not compile there."""
    return name if name.isidentifier() and not keyword.iskeyword(name) else "k_" + re.sub(r"\W", "_", name)


class _ByName(nn.ModuleDict):
    """ModuleDict indexed by user names, stored under `_key(name)`."""

    def __init__(self, modules: dict | None = None):
        super().__init__({_key(k): v for k, v in (modules or {}).items()})

    def __getitem__(self, name: str):
        return super().__getitem__(_key(name))

    def __setitem__(self, name: str, module) -> None:
        super().__setitem__(_key(name), module)

    def __contains__(self, name: str) -> bool:
        return super().__contains__(_key(name))


class _ParamsByName(nn.ParameterDict):
    """ParameterDict indexed by user names, stored under `_key(name)`."""

    def __init__(self, params: dict | None = None):
        super().__init__({_key(k): v for k, v in (params or {}).items()})

    def __getitem__(self, name: str):
        return super().__getitem__(_key(name))

    def __contains__(self, name: str) -> bool:
        return super().__contains__(_key(name))
