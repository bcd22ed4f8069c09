"""First-block residual caching on the tiny DiT: exact at threshold 0, skips and stays close above it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.families.wan.tiny import TINY_DIT
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.pipelines.sampling import Batched, sample
from telefuser_cli.runtime.transforms import RuntimeRequest, apply_transforms
from telefuser_cli.schedulers import make_scheduler

pytestmark = pytest.mark.numeric

STEPS = 6


def tiny_dit(num_layers: int = 3) -> WanDiT:
    torch.manual_seed(0)
    dit = WanDiT(dataclasses.replace(TINY_DIT, num_layers=num_layers)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.05)
    return dit


def apply_step_cache(dit, threshold: float):
    """The DiT behind a step cache: (the module to call, its cache)."""
    placed = apply_transforms(dit, RuntimeRequest(torch.device("cpu"), step_cache=threshold))
    return placed.module, placed.cache


def run(dit, guidance=None):
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 2, 8, 8, generator=g)
    context = torch.randn(1, 7, TINY_DIT.text_dim, generator=g)
    context_null = torch.randn(1, 5, TINY_DIT.text_dim, generator=g)
    scheduler = make_scheduler("unipc", STEPS, 5.0)
    denoiser = WanDenoiser(dit, 5.0, True, None, torch.device("cpu"))
    return sample(latents, scheduler, [denoiser], context, context_null, guidance=guidance)


def test_threshold_zero_is_exact():
    dit = tiny_dit()
    plain = run(dit)
    module, cache = apply_step_cache(dit, 0.0)
    cached = run(module)
    assert torch.equal(plain, cached)  # nothing skipped: the same blocks on the same data, the same kernels
    assert (cache.calls, cache.skipped, len(cache.branches)) == (2 * STEPS, 0, 2)  # cond and uncond


def test_large_threshold_skips_all_but_the_first_call_of_each_branch():
    dit = tiny_dit()
    module, cache = apply_step_cache(dit, 1e9)
    run(module)
    assert (cache.calls, cache.skipped) == (2 * STEPS, 2 * STEPS - 2)
    cache.reset()
    run(module, Batched())  # one branch holding both halves
    assert (cache.calls, cache.skipped, len(cache.branches)) == (STEPS, STEPS - 1, 1)


def test_moderate_threshold_skips_some_steps_and_stays_close():
    dit = tiny_dit()
    plain = run(dit)
    module, cache = apply_step_cache(dit, 0.3)
    cached = run(module)
    relative = ((cached - plain).norm() / plain.norm()).item()
    assert 0 < cache.skipped < cache.calls
    assert relative < 0.1


def test_the_model_is_untouched_and_errors():
    dit = tiny_dit()
    module, _ = apply_step_cache(dit, 0.1)
    assert module.model is dit and not vars(dit).keys() & {"forward", "run_block", "embed"}
    assert module.config is dit.config  # the DiT's own attributes through the wrapper
    with pytest.raises(ValueError, match="must be >= 0"):
        apply_step_cache(dit, -1.0)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        apply_step_cache(tiny_dit(num_layers=1), 0.1)
