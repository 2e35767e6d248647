"""FLOPs per window, counted by torch's FlopCounterMode (matmul and conv; 1 multiply-add = 2 FLOPs).

Elementwise ops (GELU, softmax, LayerNorm) are not counted; they are a few percent at these sizes.
"""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode


def flops(model, batch: int = 1) -> dict[str, int]:
    """{'total', 'frontend', 'learned'} FLOPs of one forward pass at `batch` (frontend = fixed log-mel DFT)."""
    inputs, mask = model.example_inputs(batch)
    was_training = model.training
    model.eval()
    try:
        # not under no_grad: FlopCounterMode's module tracker needs autograd on (torch 2.13)
        with FlopCounterMode(display=False) as total:
            model(inputs, mask)
        with FlopCounterMode(display=False) as front:
            model.featurize(inputs, mask)
    finally:
        model.train(was_training)
    t, f = int(total.get_total_flops()), int(front.get_total_flops())
    return {"total": t, "frontend": f, "learned": t - f}


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
