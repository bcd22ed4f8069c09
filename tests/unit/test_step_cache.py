"""First-block residual caching on the tiny DiT: exact at threshold 0, skips and stays close above it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.pipelines.wan import Expert, batched_cfg_guidance, denoise
from telefuser_cli.runtime.step_cache import apply_step_cache
from telefuser_cli.schedulers import make_scheduler
from telefuser_cli.tiny import TINY_DIT

pytestmark = pytest.mark.numeric

STEPS = 6


def tiny_dit(num_layers: int = 3) -> WanDiT:
    torch.manual_seed(0)
    dit = WanDiT(dataclasses.replace(TINY_DIT, num_layers=num_layers)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.05)
    return dit


def run(dit, guidance=None):
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 2, 8, 8, generator=g)
    context = torch.randn(1, 7, TINY_DIT.text_dim, generator=g)
    context_null = torch.randn(1, 5, TINY_DIT.text_dim, generator=g)
    kwargs = {} if guidance is None else {"guidance": guidance}
    scheduler = make_scheduler("unipc", STEPS, 5.0)
    return denoise(latents, scheduler, [Expert(dit, 5.0)], [0] * STEPS, context, context_null, **kwargs)


def test_threshold_zero_is_exact():
    dit = tiny_dit()
    plain = run(dit)
    cache = apply_step_cache(dit, 0.0)
    cached = run(dit)
    assert torch.equal(plain, cached)  # nothing skipped: the same blocks on the same data, the same kernels
    assert (cache.calls, cache.skipped, len(cache.branches)) == (2 * STEPS, 0, 2)  # cond and uncond


def test_large_threshold_skips_all_but_the_first_call_of_each_branch():
    dit = tiny_dit()
    cache = apply_step_cache(dit, 1e9)
    run(dit)
    assert (cache.calls, cache.skipped) == (2 * STEPS, 2 * STEPS - 2)
    cache.reset()
    run(dit, batched_cfg_guidance)  # one branch holding both halves
    assert (cache.calls, cache.skipped, len(cache.branches)) == (STEPS, STEPS - 1, 1)


def test_moderate_threshold_skips_some_steps_and_stays_close():
    dit = tiny_dit()
    plain = run(dit)
    cache = apply_step_cache(dit, 0.3)
    cached = run(dit)
    relative = ((cached - plain).norm() / plain.norm()).item()
    assert 0 < cache.skipped < cache.calls
    assert relative < 0.1


def test_remove_and_errors():
    dit = tiny_dit()
    cache = apply_step_cache(dit, 0.1)
    with pytest.raises(ValueError, match="already has a step cache"):
        apply_step_cache(dit, 0.1)
    cache.remove()
    assert "run_blocks" not in vars(dit)
    with pytest.raises(ValueError, match="must be >= 0"):
        apply_step_cache(dit, -1.0)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        apply_step_cache(tiny_dit(num_layers=1), 0.1)
