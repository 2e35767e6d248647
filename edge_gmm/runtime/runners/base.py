"""One runner interface (Polygraphy-style, STYLE.md #3): activate / infer / deactivate, a context manager.

The public `infer()` checks the feed against the bundle's manifest (names, shapes, dtypes) with a message a
user can act on, then calls the backend's `_infer_impl()`. Backends import their engine inside `activate()`.

Errors at activation: a bad artifact is a BundleError, a missing engine a MissingDependencyError (both exit 2:
a restart cannot fix them); a device fault (CUDA, TensorRT, a GPU that is busy or gone) is a RuntimeFailure
(exit 75: a restart may cure it). Backends raise DeviceError for those; `activate()` turns it into one.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_gmm.errors import BundleError, ConfigError, DeviceError, RuntimeFailure
from edge_gmm.runtime.bundle import WHOLE, Bundle, Graph, TensorSpec


class Runner:
    name = "base"
    needs_artifact = True  # runs the bundle's ONNX of exactly this precision (TensorRT/torch derive their own)

    def __init__(self, bundle: Bundle | str | Path, *, precision: str | None = None, graph: str | None = None):
        """`graph`: which of the bundle's graphs (runtime/bundle.py): None the whole-window one, or one of the
        streaming split ("encoder.<modality>", "fusion"), each a runner of its own."""
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.graph: Graph = self.bundle.graph(graph)
        self.precision = precision or self.default_precision()
        if self.needs_artifact:
            self.graph.artifact_path(self.precision)  # raises BundleError listing what exists
        self.inputs: list[TensorSpec] = self.graph.inputs
        self.outputs: list[TensorSpec] = self.graph.outputs
        self.is_active = False
        self.last_latency_s = 0.0

    # ------------------------------------------------------------ lifecycle
    def activate(self) -> "Runner":
        if not self.is_active:
            try:
                self._activate_impl()
            except DeviceError as e:  # the device, not the bundle: worth a restart
                raise RuntimeFailure(f"{self.name} runner could not start: {e.args[0] if e.args else e}",
                                     hint=e.hint) from e
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # ------------------------------------------------------------ inference
    def infer(self, feed: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        """Run one batch. `feed` maps every input name to an array of the manifest's shape and dtype."""
        if not self.is_active:
            raise BundleError(f"{self.name} runner is not active; use `with runner:` or call activate() first")
        if check:
            self.check_feed(feed)
        t0 = time.perf_counter()
        out = self._infer_impl(feed)
        self.last_latency_s = time.perf_counter() - t0
        return out

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        expected = {t.name: t for t in self.inputs}
        missing = [n for n in expected if n not in feed]
        extra = [n for n in feed if n not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            raise ConfigError(f"{self.name} runner: input names do not match the bundle: {'; '.join(parts)}", hint=f"the model takes {list(expected)}")
        for name, spec in expected.items():
            arr = feed[name]
            if not isinstance(arr, np.ndarray):
                raise ConfigError(f"{self.name} runner: input {name!r} must be a numpy array, got {type(arr).__name__}")
            if tuple(arr.shape) != spec.shape:
                raise ConfigError(f"{self.name} runner: input {name!r} has shape {tuple(arr.shape)}, the model expects {spec.shape}")
            if arr.dtype != np.dtype(spec.dtype):
                raise ConfigError(
                    f"{self.name} runner: input {name!r} has dtype {arr.dtype}, the model expects {spec.dtype}",
                    hint=f"convert with arr.astype(np.{spec.dtype})",
                )

    def default_precision(self) -> str:
        """The bundle's target precision where this graph has it, else the graph's first."""
        want = self.bundle.default_precision()
        return want if want in self.graph.artifacts else self.graph.precisions[0]

    def zeros_feed(self) -> dict[str, np.ndarray]:
        """A valid feed of zeros with every modality marked present (for warm-up and benchmarks)."""
        feed = {t.name: np.zeros(t.shape, dtype=t.dtype) for t in self.inputs}
        if "mask" in feed:
            feed["mask"][:] = 1
        return feed

    # ------------------------------------------------------------ backend hooks
    def _activate_impl(self) -> None:
        raise NotImplementedError

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        pass

    def describe(self) -> dict:
        d = {"runner": self.name, "precision": self.precision}
        if self.graph.name != WHOLE:
            d["graph"] = self.graph.name
        return d
