"""The generalist multimodal model (torch): tokenizers, compact encoders, projector, backbone, heads, presets."""

from edge_gmm.model.flops import flops, parameters
from edge_gmm.model.gmm import GMM, PositionalGMM, build_model
from edge_gmm.model.presets import PRESETS, Preset

__all__ = ["GMM", "PositionalGMM", "build_model", "flops", "parameters", "PRESETS", "Preset"]
