"""Streamable tokens (issue 15): each token comes from its own span of samples, so a device can compute it
when those samples arrive; the encoder calls + fusion give what the whole-window model gives."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edge_gmm.config import ModelSpec
from edge_gmm.data.synth import get_scenario
from edge_gmm.model import build_model
from edge_gmm.model.onnx_export import export_module

PRESETS = ["teacher-base", "student-small", "student-tiny", "student-stream"]
TOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(preset):
    sc = get_scenario("machine-health")
    torch.manual_seed(0)
    model = build_model(preset, sc.sensors(), sc.window(), sc.tasks(), ModelSpec(dropout=0.0)).eval()
    # non-trivial normalization, so the test covers that it runs inside every encoder call
    for tok in model.tokenizers.values():
        tok.mean.uniform_(-0.2, 0.2)
        tok.std.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module", params=PRESETS)
def model(request):
    return _model(request.param)


def _calls(layout, x):
    """The raw inputs of a window's encoder calls, in token order: (B, *call_shape) each."""
    if tuple(x.shape[1:]) == layout.call_shape:  # the camera's frame, or one span filling the window
        return [x]
    return [x[..., j * layout.hop : j * layout.hop + layout.span] for j in range(layout.tokens)]


def _streamed_tokens(model, inputs):
    """Tokens per modality (B, N_m, D) from one encoder call per span, as the device computes them."""
    tokens = {}
    for m, layout in model.stream_layout().items():
        encoder = model.token_encoder(m)
        tokens[m] = torch.cat([encoder(x) for x in _calls(layout, inputs[m])], dim=1)
    return tokens


def _token_masks(model, mask):
    """A modality mask (B, M) broadcast to every token of that modality: {m: (B, N_m)}."""
    layouts = model.stream_layout()
    return {m: mask[:, i : i + 1].expand(-1, layouts[m].tokens) for i, m in enumerate(model.modalities)}


def _fuse(model, tokens, masks):
    fusion = model.fusion()
    out = fusion(*(tokens[m] for m in model.modalities), *(masks[m] for m in model.modalities))
    return dict(zip(fusion.output_names, out))


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_layout_covers_the_window(model):
    for m, layout in model.stream_layout().items():
        assert layout.tokens % layout.per_call == 0
        if m == "camera":
            assert (layout.span, layout.hop, layout.call_shape) == (1, 1, model.tokenizers[m].input_shape)
            continue
        window = model.tokenizers[m].input_shape[-1]
        assert layout.per_call == 1 and layout.call_shape[-1] == layout.span
        assert (layout.tokens - 1) * layout.hop + layout.span <= window  # every span lies inside the window


@torch.no_grad()
def test_encoder_calls_and_fusion_equal_the_whole_window_model(model):
    inputs, mask = model.example_inputs(2, seed=1)
    mask[1, 1] = 0  # audio absent in sample 1: broadcast per token, it is the modality mask
    want = model(inputs, mask)
    tokens = _streamed_tokens(model, inputs)
    for m, t in tokens.items():
        assert t.shape == (2, model.stream_layout()[m].tokens, model.token_dim)
    assert _max_diff(_fuse(model, tokens, _token_masks(model, mask)), want) <= TOL


@torch.no_grad()
def test_samples_outside_the_window_do_not_change_its_tokens(model):
    """The encoder over a longer stream (loud samples before and after the window) gives the window's tokens."""
    inputs, mask = model.example_inputs(1, seed=2)
    window = _streamed_tokens(model, inputs)  # one call per span: equal to the whole model (the test above)
    g = torch.Generator().manual_seed(3)
    for m, layout in model.stream_layout().items():
        if m == "camera":  # one frame per window: nothing before or after it
            continue
        before, after = 3 * layout.hop, 2 * layout.hop + 1
        x = inputs[m]
        noise = lambda n: 10 * torch.randn((*x.shape[:-1], n), generator=g)  # noqa: E731
        stream = torch.cat([noise(before), x, noise(after)], dim=-1)
        streamed = model.token_encoder(m)(stream)  # every token of the longer stream
        assert (streamed[:, 3 : 3 + layout.tokens] - window[m]).abs().max() <= TOL, m


@torch.no_grad()
def test_masking_some_tokens_changes_the_outputs(model):
    inputs, mask = model.example_inputs(1, seed=4)
    tokens = _streamed_tokens(model, inputs)
    masks = _token_masks(model, mask)
    ref = _fuse(model, tokens, masks)
    for m in model.modalities:
        partial = dict(masks, **{m: masks[m].clone()})
        partial[m][:, : max(1, partial[m].shape[1] // 2)] = 0
        assert _max_diff(_fuse(model, tokens, partial), ref) > 1e-5, m


@torch.no_grad()
def test_all_tokens_masked_equals_the_modality_absent(model):
    inputs, mask = model.example_inputs(2, seed=5)
    tokens = _streamed_tokens(model, inputs)
    for i, m in enumerate(model.modalities):
        absent = mask.clone()
        absent[:, i] = 0
        masks = _token_masks(model, absent)
        garbage = dict(tokens, **{m: torch.full_like(tokens[m], float("nan"))})  # a stale cache slot
        got = _fuse(model, garbage, masks)
        assert all(torch.isfinite(v).all() for v in got.values()), m
        assert _max_diff(got, model(inputs, absent)) <= TOL, m


def _ort(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in feeds.items()})


@torch.no_grad()
@pytest.mark.parametrize("preset", ["student-tiny", "student-stream"])  # the resampler's masks; latent fusion
def test_encoders_and_fusion_export_and_onnxruntime_agrees(tmp_path, preset):
    model = _model(preset)
    inputs, mask = model.example_inputs(1, seed=6)
    tokens = {}
    for m, layout in model.stream_layout().items():
        x = _calls(layout, inputs[m])[0]
        path = export_module(model.token_encoder(m), (x,), tmp_path / f"encoder_{m}.onnx", [m], [f"tokens_{m}"])
        (got,) = _ort(path, {m: x})
        tokens[m] = model.token_encoder(m)(x)
        assert got.shape == tuple(tokens[m].shape) and np.abs(got - tokens[m].numpy()).max() <= TOL, m
    tokens = _streamed_tokens(model, inputs)
    masks = _token_masks(model, mask)
    masks["audio"] = masks["audio"].clone()
    masks["audio"][:, :3] = 0  # some tokens of a resampled modality absent
    masks["env"] = torch.zeros_like(masks["env"])  # a whole modality absent
    fusion = model.fusion()
    args = tuple(tokens[m] for m in model.modalities) + tuple(masks[m] for m in model.modalities)
    path = export_module(fusion, args, tmp_path / "fusion.onnx", fusion.input_names, fusion.output_names)
    got = _ort(path, dict(zip(fusion.input_names, args)))
    want = _fuse(model, tokens, masks)
    for name, value in zip(fusion.output_names, got):
        assert np.abs(value - want[name].numpy()).max() <= TOL, name
