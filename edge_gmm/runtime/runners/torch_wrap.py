"""Positional wrapper of a dict-contract model (torch imported when called; shared by export and torch-tensorrt)."""

from __future__ import annotations


def positional_module(model, modalities: list[str], output_names: list[str] | None = None):
    """An nn.Module whose forward(*modality tensors, mask) returns a tuple in `output_names` order.

    Exporters and compilers want positional tensors; the GMM takes a dict. Output order defaults to the
    model's dict order on first call (logits_<task>..., embedding).
    """
    import torch

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.modalities = list(modalities)
            self.output_names = list(output_names) if output_names else None

        def forward(self, *tensors):
            *xs, mask = tensors
            out = self.model(dict(zip(self.modalities, xs)), mask)
            names = self.output_names or list(out)
            return tuple(out[n] for n in names)

    return Positional()
