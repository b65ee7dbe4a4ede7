"""Model complexity: parameter counts and FLOPs.

FLOPs follow the convention "2 FLOPs per multiply-accumulate": ``count_flops`` returns what
``torch.utils.flop_counter.FlopCounterMode`` reports, which already counts a matmul of
[m, k] x [k, n] as 2*m*n*k and a convolution as 2 * (output elements) * (C_in/groups * kH * kW).
Only matmul / convolution / attention kernels are counted; BatchNorm, activations, pooling and
softmax are not (they are a small fraction for these networks).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(module: nn.Module, *example_inputs: torch.Tensor) -> int:
    """FLOPs (2 per MAC) of one forward pass on `example_inputs` (eval mode, no grad)."""
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            module(*example_inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def table_i_complexity(depths: list[int] | tuple[int, ...], input_size: int = 224) -> dict[str, float]:
    """{"params", "gflops"} of the fixed-depth Table I student for one input_size^2 image."""
    from .student import Student, StudentConfig

    model = Student(StudentConfig(input_size=input_size), depths)
    flops = count_flops(model, torch.zeros(1, 3, input_size, input_size))
    return {"params": count_params(model), "gflops": flops / 1e9}


__all__ = ["count_params", "count_flops", "table_i_complexity"]
