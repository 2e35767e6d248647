"""torch runner: the student from its checkpoint (or a given module), eager on CPU/CUDA, fp32 or fp16 (CUDA),
optionally compiled with torch-tensorrt. torch is imported inside `activate()` only; the module stays
device-side-clean. The model follows the GMM contract: forward(inputs: dict, mask) -> {output name: tensor}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_gmm.errors import ConfigError, DeviceError, MissingDependencyError
from edge_gmm.runtime.runners.base import Runner


class TorchRunner(Runner):
    name = "torch"
    needs_artifact = False  # runs the checkpoint, not an ONNX artifact

    def __init__(self, bundle, *, precision=None, module=None, run_dir: str | Path | None = None, device: str = "cpu",
                 threads: int = 0, compile: str = "", graph=None):
        if graph not in (None, "window"):
            raise ConfigError("torch runner: runs the whole-window model only, not the streaming split",
                              hint="use the onnxrt or tensorrt runner, or run with --whole-window")
        super().__init__(bundle, precision=precision or "fp32")
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"torch runner: precision {self.precision!r} not supported; choose fp32 or fp16 (int8 runs in onnxrt/tensorrt)")
        if self.precision == "fp16" and not device.startswith("cuda"):
            raise ConfigError("torch runner: fp16 needs a CUDA device (--device cuda); CPU fp16 eager is not a deploy path")
        if compile not in ("", "tensorrt"):
            raise ConfigError(f"torch runner: compile must be '' or 'tensorrt', got {compile!r}")
        self.module, self.run_dir, self.device, self.threads, self.compile = module, run_dir, device, threads, compile
        self._modalities = [t.name for t in self.inputs if t.name != "mask"]

    def _activate_impl(self) -> None:
        try:
            import torch
        except ImportError:
            raise MissingDependencyError("the torch runner needs torch", hint="pip install 'edge-gmm[train]'") from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise MissingDependencyError("torch runner: --device cuda but torch sees no CUDA GPU here")
        if self.threads:
            torch.set_num_threads(self.threads)
        model = self.module if self.module is not None else self._load_student()
        try:
            model = model.eval().to(self.device)
        except RuntimeError as e:  # CUDA out of memory, a GPU in a bad state: a restart may cure it
            raise DeviceError(f"torch runner: cannot move the model to {self.device}: {str(e).splitlines()[0]}") from None
        if self.precision == "fp16":
            model = model.half()
        self._torch, self._model = torch, model
        if self.compile == "tensorrt":
            self._model = self._compile_tensorrt(model)

    def _load_student(self):
        run_dir = self.run_dir or self.bundle.manifest.get("model", {}).get("run_dir")
        if not run_dir or not Path(run_dir).is_dir():
            raise ConfigError(
                "torch runner: needs the training run directory (the checkpoint is not part of a bundle)",
                hint="pass run_dir=... (CLI: --run RUN_DIR)",
            )
        from edge_gmm.train.checkpoint import load_run

        try:
            student = load_run(run_dir, roles=("student",)).student
        except RuntimeError as e:  # torch's load_state_dict: the model code no longer matches the checkpoint
            raise ConfigError(f"torch runner: cannot load the student of {run_dir}: {str(e).splitlines()[0]}",
                              hint="the model code changed since this run was trained; retrain or use the onnxrt runner") from None
        if student is None:
            raise ConfigError(f"torch runner: {run_dir} holds no trained student (student.safetensors)")
        return student

    def _compile_tensorrt(self, model):
        try:
            import torch_tensorrt
        except ImportError:
            raise MissingDependencyError("torch runner: compile='tensorrt' needs torch-tensorrt", hint="pip install 'edge-gmm[tensorrt]'") from None
        from edge_gmm.runtime.runners.torch_wrap import positional_module

        wrapped = positional_module(model, self._modalities)
        dtype = self._torch.half if self.precision == "fp16" else self._torch.float
        examples = [self._torch.zeros(t.shape, dtype=dtype, device=self.device) for t in self.inputs]
        compiled = torch_tensorrt.compile(wrapped, ir="dynamo", inputs=examples, enabled_precisions={dtype})
        return _DictFromPositional(compiled, self._modalities, [t.name for t in self.outputs])

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        dtype = torch.half if self.precision == "fp16" else torch.float
        with torch.inference_mode():
            inputs = {m: torch.from_numpy(feed[m]).to(self.device, dtype) for m in self._modalities}
            mask = torch.from_numpy(feed["mask"]).to(self.device, dtype)
            out = self._model(inputs, mask)
            return {t.name: out[t.name].float().cpu().numpy() for t in self.outputs}

    def describe(self) -> dict:
        d = super().describe()
        d.update(device=self.device, threads=self.threads or "default", compile=self.compile or "eager")
        return d


class _DictFromPositional:
    """Calls a positional compiled module with the dict contract again."""

    def __init__(self, compiled, modalities, output_names):
        self.compiled, self.modalities, self.output_names = compiled, modalities, output_names

    def __call__(self, inputs, mask):
        outs = self.compiled(*[inputs[m] for m in self.modalities], mask)
        return dict(zip(self.output_names, outs))
