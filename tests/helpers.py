"""Running the real CLI in-process and reading what it wrote; the error measure of numeric tolerances."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from typer.testing import CliRunner

from telefuser_cli.cli import app


def run_cli(*args: str):
    """Invoke `telefuser ARGS` in-process; returns the click Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def dump(*overrides: str) -> dict:
    result = run_cli("dump-config", *overrides)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def job_dirs(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.rglob("config.json"))


def max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max|got - want| / max|want|: the measure every relative tolerance in these tests is stated in."""
    return ((got - want).abs().max() / want.abs().max()).item()


def assert_rel_close(got: torch.Tensor, want: torch.Tensor, limit: float) -> None:
    """Assert max_rel_err(got, want) <= limit, naming the measured error when it is not."""
    assert got.shape == want.shape, f"shapes differ: {tuple(got.shape)} vs {tuple(want.shape)}"
    err = max_rel_err(got, want)
    assert err <= limit, (
        f"max relative error {err:.3e} > {limit:.1e} (max abs {(got - want).abs().max():.3e})"
    )


def randomize_vae(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A VAE's default init plus non-trivial gammas and biases (the official init has all-ones / zeros), so
    that a parity test exercises every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:
                bound = 1.0 / math.sqrt(p[0].numel())
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound * math.sqrt(3))
    return model.eval()
