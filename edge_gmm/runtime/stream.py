"""A bundle's streaming split, opened (numpy only): one encoder runner per modality and the fusion runner.

    with StreamGraphs(bundle, "onnxrt", threads=1) as g:
        tok = g.encode("imu", span)                      # one encoder call: (*call_shape) -> (per_call, D)
        out = g.fuse(tokens, masks)                      # {m: (N_m, D)}, {m: (N_m,)} -> {output: (1, ...)}
        out = g.window(inputs, mask)                     # a whole window through the split (parity, evaluation)

Graph contract (manifest `stream`, docs/bundle.md): graph "encoder.<m>" takes `samples` (1, *call_shape) and
returns `tokens` (1, per_call, D); graph "fusion" takes tokens_<m> (1, N_m, D) then mask_<m> (1, N_m) for
every modality in the manifest's order and returns the whole-window graph's outputs. Token j of a window reads
window samples [j * hop, j * hop + span) (`window_calls`); a camera window is one frame, one call.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from edge_gmm.devices.token_streams import TokenLayout
from edge_gmm.errors import BundleError
from edge_gmm.runtime.bundle import FUSION, Bundle, encoder_graph


def window_calls(layout: TokenLayout, x: np.ndarray) -> list[np.ndarray]:
    """The encoder-call inputs of one window's modality input `x` (model layout, no batch), in token order."""
    if layout.slots == 1 and layout.span == 1 and layout.hop == 1:  # a camera frame: one call
        return [x]
    return [x[..., j * layout.hop : j * layout.hop + layout.span] for j in range(layout.slots)]


class StreamGraphs:
    """Every graph of a bundle's streaming split, each in a runner of kind `runner` (onnxrt / tensorrt)."""

    def __init__(self, bundle: Bundle, runner: str = "onnxrt", *, precision: str | None = None, **options):
        from edge_gmm.runtime.runners import create_runner

        st = bundle.stream
        if st is None:
            raise BundleError(f"{bundle.source}: exported without the streaming split (no encoder/fusion graphs)",
                              hint="export it again with this edge-gmm, or run with --whole-window")
        self.bundle, self.dim = bundle, int(st["dim"])
        self.modalities = list(bundle.manifest.get("modalities") or [s["name"] for s in bundle.manifest["sensors"]])
        self.layouts = {m: TokenLayout.from_dict(m, st["layouts"][m]) for m in self.modalities}
        self.encoders = {m: create_runner(runner, bundle, precision=precision, graph=encoder_graph(m), **options)
                         for m in self.modalities}
        self.fusion = create_runner(runner, bundle, precision=precision, graph=FUSION, **options)
        self.outputs = [t.name for t in self.fusion.outputs]
        self._stack: ExitStack | None = None

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "StreamGraphs":
        with ExitStack() as stack:
            for r in [*self.encoders.values(), self.fusion]:
                stack.enter_context(r)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def runners(self) -> list:
        return [*self.encoders.values(), self.fusion]

    # ------------------------------------------------------------ inference
    def encode(self, m: str, call: np.ndarray, *, check: bool = False) -> np.ndarray:
        """One encoder call: raw samples (*call_shape) of modality m -> tokens (per_call, D)."""
        runner = self.encoders[m]
        feed = {runner.inputs[0].name: np.ascontiguousarray(call, dtype=np.float32)[None]}
        return next(iter(runner.infer(feed, check=check).values()))[0]

    def encoder(self, m: str):
        """encode() bound to modality m: the callable a TokenCache takes."""
        return lambda call: self.encode(m, call)

    def fusion_feed(self, tokens: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for m in self.modalities:
            feed[f"tokens_{m}"] = np.ascontiguousarray(tokens[m], dtype=np.float32)[None]
            feed[f"mask_{m}"] = np.ascontiguousarray(masks[m], dtype=np.float32)[None]
        return feed

    def fuse(self, tokens: dict[str, np.ndarray], masks: dict[str, np.ndarray], *, check: bool = False) -> dict[str, np.ndarray]:
        """The fusion graph over one token cache snapshot: {output name: (1, ...)}."""
        return self.fusion.infer(self.fusion_feed(tokens, masks), check=check)

    def window_tokens(self, inputs: dict[str, np.ndarray], mask: np.ndarray) -> tuple[dict, dict]:
        """A whole window's tokens and per-token masks, encoded call by call as a device would."""
        tokens, masks = {}, {}
        for i, m in enumerate(self.modalities):
            lay = self.layouts[m]
            if mask[i] > 0.5:
                tokens[m] = np.concatenate([self.encode(m, c) for c in window_calls(lay, inputs[m])])
            else:  # an absent modality: no encoder call, every token masked
                tokens[m] = np.zeros((lay.tokens, self.dim), np.float32)
            masks[m] = np.full(lay.tokens, float(mask[i] > 0.5), np.float32)
        return tokens, masks

    def window(self, inputs: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
        """One whole window (model layout, no batch; mask (M,)) through encoders + fusion: {output: (1, ...)}."""
        return self.fuse(*self.window_tokens(inputs, mask))
