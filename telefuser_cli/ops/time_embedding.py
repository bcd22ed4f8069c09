"""The sinusoidal timestep embedding of the DiTs, in float64 as the official code computes it."""

from __future__ import annotations

import math
from typing import Literal

import torch

MAX_PERIOD = 10000.0


def sinusoidal_embedding(t: torch.Tensor, dim: int, freqs: Literal["pow", "exp_log"] = "pow") -> torch.Tensor:
    """``[cos(t w), sin(t w)]`` with ``w_i = 10000**(-i/half)``, ``half = dim // 2``, in float64.

    t: [N] -> [N, dim] float64. Both DiTs use this layout (cos first, no frequency shift); they differ only
    in how the official code writes ``w``, which changes the last float64 bits of most frequencies:
    ``"pow"`` ``10000**(-i/half)`` (official Wan ``sinusoidal_embedding_1d``), ``"exp_log"``
    ``exp(-ln(10000) * i/half)`` (official HunyuanVideo ``timestep_embedding``).
    """
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=t.device)
    # each written in the official order of operations: the float64 rounding follows it
    if freqs == "pow":
        w = torch.pow(MAX_PERIOD, -i / half)
    elif freqs == "exp_log":
        w = torch.exp(-math.log(MAX_PERIOD) * i / half)
    else:
        raise ValueError(f"freqs={freqs!r} must be 'pow' or 'exp_log'")
    angles = torch.outer(t.to(torch.float64), w)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
