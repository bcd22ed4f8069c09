"""Regional compilation of a DiT: ``torch.compile`` of each repeated block its ``runtime_plan`` names.

Every block is the same class with the same shapes, so Dynamo traces one block once and the other blocks
reuse that code (their parameters are inputs of the graph, not constants: torch's default
``inline_inbuilt_nn_modules``); compile time is that of one block, not of the whole model. The embedding,
the head and the sampling loop stay eager. Works on CPU too (Inductor's C++ backend needs a C++ compiler).

Each block is compiled with ``nn.Module.compile`` (its call, hooks included, no attribute replaced); the
hooks of :mod:`telefuser_cli.runtime.offload` are excluded from tracing (``torch.compiler.disable``) and run
eagerly around the compiled code.
"""

from __future__ import annotations

import shutil

import torch
import torch.nn as nn


def compiler_available() -> tuple[bool, str]:
    """Whether torch.compile can generate code here; (False, reason) when not (no C++ compiler on CPU)."""
    if not torch.cuda.is_available() and shutil.which("g++") is None and shutil.which("clang++") is None:
        return False, "no C++ compiler (g++ or clang++) on PATH, which Inductor needs on CPU"
    return True, ""


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks the class's ``runtime_plan`` declares (each an instance of its ``block_type``)."""
    plan = type(model).runtime_plan
    blocks = list(getattr(model, plan.blocks))
    if not all(isinstance(block, plan.block_type) for block in blocks):
        raise ValueError(
            f"{type(model).__name__}.{plan.blocks} holds blocks other than {plan.block_type.__name__}"
        )
    return blocks


def compile_blocks(
    model: nn.Module,
    mode: str | None = None,
    dynamic: bool | None = False,
    backend: str = "inductor",
    fullgraph: bool = False,
) -> nn.Module:
    """Compile each repeated block of ``model`` in place and return ``model``.

    ``mode``, ``backend`` and ``fullgraph`` are torch.compile's. ``dynamic=False`` specialises on shapes: one
    run has one video size, and the guard on it costs nothing per step; a new size recompiles once.
    The RoPE rotation is complex arithmetic, which Inductor leaves to eager kernels (a warning says so); the
    block still compiles as one graph. Raises ValueError if already compiled, RuntimeError naming the reason
    when Inductor cannot generate code on this machine.
    """
    blocks = repeated_blocks(model)
    if any(block._compiled_call_impl is not None for block in blocks):
        raise ValueError("the DiT's blocks are already compiled (compile_blocks was called on it before)")
    if backend == "inductor":
        ok, reason = compiler_available()
        if not ok:
            raise RuntimeError(f"torch.compile is not available: {reason}")
    for block in blocks:
        block.compile(mode=mode, dynamic=dynamic, backend=backend, fullgraph=fullgraph)
    return model
