"""The context prepared once per run (WanDiT.prepare_context) against recomputing it in every block, on tiny DiTs.

Bit for bit in float32 where both sides project contexts of the same shape with the same kernels: the forward,
two-pass trajectories (t2v and i2v with the CLIP path, two MoE experts), the step cache. Within a tolerance
where they do not: batched CFG concatenates two prepared [1, text_len] caches but projects the raw
[2, text_len] batch at once; compiled blocks reassociate sums.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from helpers import assert_rel_close

from telefuser_cli.families.base import Step
from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.families.wan.tiny import TINY_DIT, TINY_DIT_I2V_CLIP
from telefuser_cli.models.wan_context import ContextCache
from telefuser_cli.models.wan_dit import CrossAttention, WanDiT
from telefuser_cli.pipelines.sampling import Batched, TwoPass, sample
from telefuser_cli.runtime.compile import compile_blocks
from telefuser_cli.runtime.transforms import RuntimeRequest, apply_transforms
from telefuser_cli.schedulers import make_scheduler

pytestmark = pytest.mark.numeric

STEPS = 4
# Batched CFG against two passes, or a cache of two [1, text_len] projections against one [2, text_len]
# projection: other row counts, so possibly other kernels on another CPU. Max relative error, float32, measured
# on an AMD EPYC: 0 under the default kernels, ATEN_CPU_CAPABILITY=default/avx2, ONEDNN_MAX_CPU_ISA=AVX2/SSE41,
# MKL_CBWR=COMPATIBLE/AVX2 and the AVX2 set of `make test-kernels`, 1 and 2 threads; 1.7e-6 to 2.0e-6 with the
# batched side's linears summing in another order. A guidance scale of 4.95 for 5 gives 1.3e-4, a dropped
# block 0.33.
BATCH_TOL = 2e-5
CPU = torch.device("cpu")


def tiny_dit(config=TINY_DIT, seed: int = 0, num_layers: int = 3) -> WanDiT:
    torch.manual_seed(seed)
    dit = WanDiT(dataclasses.replace(config, num_layers=num_layers)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.1)  # nothing zero-initialised (the head would hide differences)
    return dit


def image_condition(latents: torch.Tensor) -> SimpleNamespace:
    g = torch.Generator().manual_seed(3)
    return SimpleNamespace(
        y=torch.randn(1, 20, *latents.shape[2:], generator=g),
        clip_fea=torch.randn(1, 257, TINY_DIT_I2V_CLIP.image_dim, generator=g),
    )


def denoiser(dit, cfg_scale: float = 5.0, cache_context: bool = True, condition=None) -> WanDenoiser:
    """The DiT as the pipeline samples with it; ``cache_context=False`` keeps the contexts raw."""
    return WanDenoiser(dit, cfg_scale, cache_context, condition, CPU)


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 3, 8, 8, generator=g)
    context = torch.randn(1, 7, TINY_DIT.text_dim, generator=g)
    context_null = torch.randn(1, 5, TINY_DIT.text_dim, generator=g)  # another length, as in a real run
    return latents, context, context_null


def run(denoisers, schedule, guidance=None, **kwargs):
    latents, context, context_null = inputs()
    scheduler = make_scheduler("unipc", len(schedule), 5.0)
    return sample(
        latents, scheduler, denoisers, context, context_null, schedule=schedule, guidance=guidance, **kwargs
    )


def test_forward_with_cache_equals_raw_context_bitwise():
    latents, context, context_null = inputs()
    t = torch.tensor([500.0, 250.0])
    both = torch.cat([context, torch.nn.functional.pad(context_null, (0, 0, 0, 2))])
    with torch.no_grad():
        dit = tiny_dit()
        x = torch.cat([latents, latents.flip(2)])
        assert torch.equal(dit(x, t, dit.prepare_context(both)), dit(x, t, both))
        wrapped = denoiser(tiny_dit(TINY_DIT_I2V_CLIP), condition=image_condition(latents))
        image = {"y": wrapped.y, "clip_fea": wrapped.clip_fea}
        assert torch.equal(
            wrapped.dit(x, t, wrapped.prepare(both), **image), wrapped.dit(x, t, both, **image)
        )


@pytest.mark.parametrize("guidance", [TwoPass(), Batched()], ids=lambda g: g.name)
@pytest.mark.parametrize("image", [False, True])
def test_trajectory_with_cache_matches_recomputing(guidance, image):
    latents = inputs()[0]
    dit = tiny_dit(TINY_DIT_I2V_CLIP) if image else tiny_dit()
    condition = image_condition(latents) if image else None
    cached = run([denoiser(dit, condition=condition)], [0] * STEPS, guidance)
    recomputed = run([denoiser(dit, cache_context=False, condition=condition)], [0] * STEPS, guidance)
    if isinstance(guidance, TwoPass):  # the same [1, text_len] projections, once or in every block
        assert torch.equal(cached, recomputed), (cached - recomputed).abs().max().item()
    else:
        assert_rel_close(cached, recomputed, BATCH_TOL)
    # and batched CFG over caches still matches two passes over them
    other = Batched() if isinstance(guidance, TwoPass) else TwoPass()
    assert_rel_close(cached, run([denoiser(dit, condition=condition)], [0] * STEPS, other), BATCH_TOL)


def count_projections(monkeypatch) -> list[int]:
    calls = []
    real = CrossAttention.project
    monkeypatch.setattr(CrossAttention, "project", lambda self, *a: calls.append(id(self)) or real(self, *a))
    return calls


def test_moe_experts_prepare_their_own_context_once(monkeypatch):
    """Each expert (its own weights) projects positive and negative contexts once, after it came in."""
    high, low = tiny_dit(seed=0), tiny_dit(seed=1)
    schedule = [0, 0, 1, 1, 1]
    recomputed = run([denoiser(high, 5.0, False), denoiser(low, 3.0, False)], schedule)
    events = []
    for name, dit in (("high", high), ("low", low)):
        real = dit.prepare_context
        monkeypatch.setattr(
            dit, "prepare_context", lambda c, n=name, f=real, **image: events.append(n) or f(c, **image)
        )
    calls = count_projections(monkeypatch)
    cached = run(
        [denoiser(high, 5.0), denoiser(low, 3.0)],
        schedule,
        on_switch=lambda old, new: events.append("switch"),
    )
    assert torch.equal(cached, recomputed)
    assert events == ["high", "high", "switch", "low", "low"]
    assert len(calls) == 2 * 2 * 3  # 2 experts x (positive, negative) x 3 blocks, whatever the step count


def test_unguided_expert_prepares_only_the_positive_context(monkeypatch):
    calls = count_projections(monkeypatch)
    run([denoiser(tiny_dit(), 1.0)], [0] * STEPS)
    assert len(calls) == 3


def test_step_cache_tells_prepared_branches_apart():
    dit = tiny_dit()
    plain = run([denoiser(dit, cache_context=False)], [0] * STEPS)
    placed = apply_transforms(dit, RuntimeRequest(CPU, step_cache=0.0))
    cache = placed.cache
    assert torch.equal(run([denoiser(placed.module)], [0] * STEPS), plain)
    assert (cache.calls, cache.skipped, len(cache.branches)) == (2 * STEPS, 0, 2)
    cache.threshold = 1e9  # skip all but each branch's first call
    cache.reset()
    run([denoiser(placed.module)], [0] * STEPS, Batched())  # one branch, a fresh concatenation per step
    assert (cache.calls, cache.skipped, len(cache.branches)) == (STEPS, STEPS - 1, 1)


def test_compiled_blocks_take_the_cache_in_one_graph():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dit = tiny_dit()
    latents, context, _ = inputs()
    t = torch.tensor([500.0])
    with torch.no_grad():
        cache = dit.prepare_context(context)
        eager = dit(latents, t, cache)
        compile_blocks(dit, backend="aot_eager", fullgraph=True)
        dit(latents, t, cache)
        compiled = dit(latents, t, cache)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs == 1
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_cache_misuse_is_refused():
    latents, context, context_null = inputs()
    t = torch.tensor([500.0])
    with torch.no_grad():
        dit = tiny_dit()
        cache = dit.prepare_context(context)
        with pytest.raises(ValueError, match="batch 1, x has batch 2"):
            dit(torch.cat([latents, latents]), t.expand(2), cache)
        with pytest.raises(ValueError, match="holds 3 blocks.*has 2 blocks"):
            tiny_dit(num_layers=2)(latents, t, cache)
        wrapped = denoiser(tiny_dit(TINY_DIT_I2V_CLIP), condition=image_condition(latents))
        image_cache = wrapped.prepare(context)
        with pytest.raises(ValueError, match="other clip_fea"):
            wrapped.dit(latents, t, image_cache, y=wrapped.y, clip_fea=wrapped.clip_fea.clone())
        with pytest.raises(ValueError, match="same clip_fea"):
            ContextCache.cat([cache, image_cache])
        with pytest.raises(ValueError, match="both contexts raw or both prepared"):
            Batched()(denoiser(dit), latents, Step(0, t[0], t[0] * 0, 500.0), cache, context_null)
