"""Export a GMM to ONNX the way the toolkit needs it: dynamo exporter, opset 18, static shapes,
positional inputs (modalities then `mask`), outputs (logits per task then `embedding`), and the log-mel
front-end nodes renamed `logmel/...` so a quantizer can exclude them by name. `export_module` does the same
for the streaming split (`GMM.token_encoder(m)`, `GMM.fusion()`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch

LOGMEL_PREFIX = "logmel/"


def export_onnx(model, path: str | Path, batch: int = 1, opset: int = 18, target=None) -> Path:
    """Write `model` (a GMM) to `path` for a fixed batch size; returns the path.

    With an export `target`, ops its TensorRT cannot parse are rewritten (export/rewrites.py) and the rewrites
    are recorded in the model's metadata (`edge_gmm.rewrites`); parity against torch is the caller's check."""
    model.eval()
    wrapper = model.export_wrapper().eval()
    inputs, mask = model.example_inputs(batch)
    args = tuple(inputs[m] for m in model.modalities) + (mask,)
    path = export_module(wrapper, args, path, model.input_names, model.output_names, opset)
    if target is not None:
        rewrite_file(path, target)
    return path


def rewrite_file(path: str | Path, target) -> list[str]:
    """Rewrite the ONNX at `path` in place for `target` (export/rewrites.py), recording what was rewritten in
    its metadata (`edge_gmm.rewrites`); every graph of a bundle goes through this once. Returns the ops."""
    import onnx

    from edge_gmm.export.rewrites import rewrite_for_target

    proto = onnx.load(str(path))
    applied = rewrite_for_target(proto, target)
    if applied:
        proto.metadata_props.add(key="edge_gmm.rewrites", value=",".join(applied))
    onnx.save(proto, str(path))
    return applied


def export_module(module, args: tuple, path: str | Path, input_names: list[str], output_names: list[str],
                  opset: int = 18) -> Path:
    """Any positional module (the whole GMM, `GMM.token_encoder(m)`, `GMM.fusion()`) at the static shapes of
    `args`, with its log-mel nodes tagged; returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, verbose=False,
                                    input_names=input_names, output_names=output_names)
    program.save(str(path))
    proto = onnx.load(str(path))
    tag_logmel_nodes(proto)
    onnx.save(proto, str(path))
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter warns about torchvision ops it skips (we use none) and a deprecated pytree check inside
    torch: noise to a user reading the export log. Real export errors still raise."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def tag_logmel_nodes(proto) -> int:
    """Prefix with `logmel/` every node the exporter attributes to a LogMel module; returns how many."""
    count = 0
    for node in proto.graph.node:
        scope = " ".join(p.value for p in node.metadata_props if p.key in ("namespace", "pkg.torch.onnx.class_hierarchy"))
        if "LogMel" in scope and not node.name.startswith(LOGMEL_PREFIX):
            node.name = LOGMEL_PREFIX + node.name
            count += 1
    return count
