"""Regional compilation of the Wan DiT: ``torch.compile`` of each transformer block's forward, from outside.

Every block is the same class with the same shapes, so Dynamo traces one block once and the other blocks
reuse that code (their parameters are inputs of the graph, not constants: torch's default
``inline_inbuilt_nn_modules``); compile time is that of one block, not of the whole model. The embedding,
the head and the sampling loop stay eager. Works on CPU too (Inductor's C++ backend needs a C++ compiler).
"""

from __future__ import annotations

import shutil

import torch

from telefuser_cli.models.wan_dit import WanDiT


def compiler_available() -> tuple[bool, str]:
    """Whether torch.compile can generate code here; (False, reason) when not (no C++ compiler on CPU)."""
    if not torch.cuda.is_available() and shutil.which("g++") is None and shutil.which("clang++") is None:
        return False, "no C++ compiler (g++ or clang++) on PATH, which Inductor needs on CPU"
    return True, ""


def compile_blocks(
    dit: WanDiT,
    mode: str | None = None,
    dynamic: bool | None = False,
    backend: str = "inductor",
    fullgraph: bool = False,
) -> WanDiT:
    """Compile each block's forward of ``dit`` in place and return ``dit``.

    ``mode``, ``backend`` and ``fullgraph`` are torch.compile's. ``dynamic=False`` specialises on shapes: one
    run has one video size, and the guard on it costs nothing per step; a new size recompiles once.
    The RoPE rotation is complex arithmetic, which Inductor leaves to eager kernels (a warning says so); the
    block still compiles as one graph. Raises ValueError if already compiled, RuntimeError naming the reason when Inductor cannot generate
    code on this machine.
    """
    if any("forward" in vars(block) for block in dit.blocks):
        raise ValueError("the DiT's blocks are already compiled (compile_blocks was called on it before)")
    if backend == "inductor":
        ok, reason = compiler_available()
        if not ok:
            raise RuntimeError(f"torch.compile is not available: {reason}")
    for block in dit.blocks:
        # The forward, not the module (``block.compile()`` would compile ``__call__`` with its hooks): the
        # hooks of runtime.offload swap weights between host and device and must run eagerly around it.
        block.forward = torch.compile(
            block.forward, mode=mode, dynamic=dynamic, backend=backend, fullgraph=fullgraph
        )
    return dit
