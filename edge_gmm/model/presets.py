"""Model presets by name (STYLE.md #2): one table, one factory (`edge_gmm.model.build_model`).

A preset fixes the sizes of every stage of the pipeline (tokenizer patch lengths, encoder width, projector,
backbone depth/width) and of the audio front end. `ModelSpec` fields that are non-zero override the preset.
The student presets are sized so that their FLOPs per window, front end included, stay under 1/8 of
`teacher-base` on the machine-health scenario (see `edge-gmm model info`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge_gmm.registry import Registry


@dataclass(frozen=True)
class Preset:
    d_model: int  # backbone width
    depth: int  # backbone transformer blocks
    heads: int
    mlp_ratio: float  # backbone MLP hidden = mlp_ratio * d_model
    enc_dim: int  # width of the per-modality compact encoders (before the projector)
    enc_blocks: int  # residual conv blocks per modality encoder
    projector: str  # "linear" | "mlp"
    patch_s: float  # imu / timeseries token length in seconds (at least one sample)
    audio_patch_frames: int  # log-mel frames per audio token
    camera_grid: int  # camera tokens = grid * grid
    camera_stem: int  # channels of the camera conv stem
    # audio front end (inside the graph): window, hop, mel bands, highest frequency (0 = Nyquist)
    audio_win_s: float = 0.025
    audio_hop_s: float = 0.010
    n_mels: int = 64
    audio_fmax: float = 0.0
    resampler_queries: int = 0  # >0: K learned queries per modality (caps tokens per modality at K)
    # IMU front end: a log power spectrogram per channel (phase-free, so a model cannot tell recording
    # sessions apart by the phases between harmonics); 0 = time-domain patches like any time series
    imu_win_s: float = 0.25
    imu_hop_s: float = 0.125
    # "backbone": transformer blocks over every token; "latent": a CLS latent cross-attends to keys and values
    # each token owns (model/latent.py): no token attends to another, so streaming caches them per token
    fusion: str = "backbone"
    series_context: int = 0  # left context of a series token in samples (0 = tokenizers.STEM_CONTEXT)
    audio_context_frames: int = 0  # log-mel frames an audio token reads before its own patch


PRESETS: Registry[Preset] = Registry("model preset")

PRESETS.add(
    "teacher-base",
    Preset(d_model=128, depth=4, heads=4, mlp_ratio=4.0, enc_dim=96, enc_blocks=2, projector="mlp",
           patch_s=0.1, audio_patch_frames=5, camera_grid=4, camera_stem=24),
)
PRESETS.add(
    "student-small",
    Preset(d_model=64, depth=2, heads=2, mlp_ratio=2.0, enc_dim=48, enc_blocks=1, projector="linear",
           patch_s=0.1, audio_patch_frames=5, camera_grid=4, camera_stem=8,
           audio_win_s=0.020, audio_hop_s=0.020, n_mels=32, audio_fmax=4000.0),
)
PRESETS.add(  # the default student: latent fusion (0.12 MFLOP per prediction) over tokens with left context
    "student-stream",
    Preset(d_model=64, depth=2, heads=2, mlp_ratio=2.0, enc_dim=48, enc_blocks=1, projector="linear",
           patch_s=0.1, audio_patch_frames=5, camera_grid=4, camera_stem=8,
           audio_win_s=0.020, audio_hop_s=0.020, n_mels=32, audio_fmax=4000.0, fusion="latent", series_context=20,
           audio_context_frames=10),
)
PRESETS.add(
    "student-tiny",
    Preset(d_model=32, depth=1, heads=2, mlp_ratio=2.0, enc_dim=32, enc_blocks=1, projector="linear",
           patch_s=0.1, audio_patch_frames=5, camera_grid=2, camera_stem=8,
           audio_win_s=0.016, audio_hop_s=0.020, n_mels=24, audio_fmax=4000.0, resampler_queries=4),
)


def resolve(name: str, spec=None) -> Preset:
    """The preset `name` with the non-zero overrides of a ModelSpec applied."""
    preset = PRESETS.get(name)
    if spec is None:
        return preset
    over = {}
    for field in ("d_model", "depth", "heads", "patch_s", "resampler_queries"):
        value = getattr(spec, field, 0)
        if value:
            over[field] = value
    return dataclasses.replace(preset, **over)
