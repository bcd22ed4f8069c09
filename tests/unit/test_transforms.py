"""runtime.transforms on the HunyuanVideo 1.5 DiT (double-stream blocks over video and context tokens): each
transform its plan allows gives the plain model's output, and the driver-facing record and counters.

The Wan DiT's transforms are tested in test_compile, test_offload, test_step_cache, test_context_cache and
tests/distributed, all through the same plan-driven code.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from telefuser_cli.config.schema import OffloadType
from telefuser_cli.families.hunyuan15.latents import t2v_condition
from telefuser_cli.families.hunyuan15.pipeline import Hunyuan15Denoiser
from telefuser_cli.families.hunyuan15.text import TextConditioning
from telefuser_cli.families.hunyuan15.tiny import TINY_DIT
from telefuser_cli.families.wan.tiny import TINY_DIT as TINY_WAN_DIT
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.pipelines import sampling
from telefuser_cli.runtime.compile import compile_blocks, compiler_available
from telefuser_cli.runtime.offload import SequentialOffloader
from telefuser_cli.runtime.transforms import (
    COMPILE,
    MODEL_OFFLOAD,
    SEQUENCE_PARALLEL,
    SEQUENTIAL_OFFLOAD,
    STEP_CACHE,
    Placed,
    RuntimeRequest,
    apply_transforms,
    supported,
)
from telefuser_cli.schedulers import make_scheduler

# Inductor leaves the complex RoPE product to eager kernels and warns each time; expected here.
pytestmark = [
    pytest.mark.numeric,
    pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex"),
]

STEPS = 4
CPU = torch.device("cpu")


def tiny_dit(seed: int = 0) -> Hunyuan15DiT:
    torch.manual_seed(seed)
    dit = Hunyuan15DiT(dataclasses.replace(TINY_DIT, mm_double_blocks_depth=3)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.1)  # nothing zero-initialised (cond_type_embedding, the final layer)
    return dit


def conditioning(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, TINY_DIT.in_channels, 2, 4, 4, generator=g)

    def prompt(valid: int) -> TextConditioning:
        text = torch.randn(1, 6, TINY_DIT.text_states_dim, generator=g)
        glyph = torch.randn(1, 3, TINY_DIT.byt5_dim, generator=g)
        mask = torch.tensor([[1] * valid + [0] * (6 - valid)])
        return TextConditioning(text, mask, glyph, torch.tensor([[1, 1, 0]]))

    return latents, prompt(5), prompt(3)  # positive, negative of another length


def sample(dit) -> torch.Tensor:
    latents, positive, negative = conditioning()
    scheduler = make_scheduler("euler", STEPS, 5.0)
    denoiser = Hunyuan15Denoiser(Placed(dit), 6.0, t2v_condition(latents))
    return sampling.sample(latents, scheduler, [denoiser], positive, negative)


def test_supported_transforms_follow_the_plans():
    assert supported(Hunyuan15DiT) == {COMPILE, STEP_CACHE, MODEL_OFFLOAD, SEQUENTIAL_OFFLOAD}
    assert supported(WanDiT) == supported(Hunyuan15DiT) | {SEQUENCE_PARALLEL}
    assert supported(torch.nn.Linear) == frozenset()


def test_step_cache_threshold_zero_is_exact_and_large_skips():
    dit = tiny_dit()
    plain = sample(dit)
    placed = apply_transforms(dit, RuntimeRequest(CPU, step_cache=0.0))
    assert torch.equal(sample(placed.module), plain)  # the same blocks on the same data
    assert placed.record()["step_cache"] == {"calls": 2 * STEPS, "skipped": 0}
    assert len(placed.cache.branches) == 2  # the two prompts

    placed = apply_transforms(tiny_dit(), RuntimeRequest(CPU, step_cache=1e9))
    skipped = sample(placed.module)
    assert placed.record()["step_cache"] == {"calls": 2 * STEPS, "skipped": 2 * STEPS - 2}
    assert not torch.equal(skipped, plain) and torch.isfinite(skipped).all()
    placed.release()  # an expert leaving the device forgets its references
    assert placed.record()["step_cache"] == {"calls": 0, "skipped": 0} and not placed.cache.branches


@torch.no_grad()
def test_skipped_call_adds_the_cached_rest():
    """The same inputs twice: the second call is skipped, and first block + cached rest gives the full output
    (to float32 round-off: a + (b - a) is not b bit for bit)."""
    dit = tiny_dit()
    latents, positive, _ = conditioning()
    x = torch.cat([latents, t2v_condition(latents)], dim=1)
    t = torch.tensor([700.0])
    context = dit.prepare_context(positive.text, positive.text_mask, positive.glyph, positive.glyph_mask)
    full = dit(x, t, context)
    placed = apply_transforms(dit, RuntimeRequest(CPU, step_cache=1e9))
    first, again = placed.module(x, t, context), placed.module(x, t, context)
    assert placed.record()["step_cache"] == {"calls": 2, "skipped": 1}
    assert torch.equal(first, full)
    torch.testing.assert_close(again, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offload", [OffloadType.SEQUENTIAL_CPU_OFFLOAD, OffloadType.MODEL_CPU_OFFLOAD])
def test_offload_on_cpu_is_a_recorded_no_op(offload):
    dit = tiny_dit()
    plain = sample(dit)
    placed = apply_transforms(dit, RuntimeRequest(CPU, offload=offload))
    assert placed.module is dit and placed.offload is None and placed.cache_context
    assert placed.report["offload"]["type"] == offload.name
    assert not placed.report["offload"]["applied"] and "no-op" in placed.report["offload"]["reason"]
    placed.load()
    assert torch.equal(sample(placed.module), plain)
    placed.release()


def test_block_sequential_hooks_on_double_blocks_are_exact():
    """On a CPU 'device' the copies are real and synchronous: each double block swaps in and out."""
    dit = tiny_dit()
    plain = sample(dit)
    trace = []
    offloader = SequentialOffloader(dit.double_blocks, CPU, trace)
    assert torch.equal(sample(dit), plain)
    assert trace[:3] == [("load", 0), ("prefetch", 1), ("release", 0)]
    assert len(trace) == 2 * STEPS * 3 * 3  # calls x blocks x (wait/load, prefetch, release)
    offloader.remove()


def test_compiled_double_blocks_share_one_graph_and_match_eager():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dit = tiny_dit()
    plain = sample(dit)
    assert apply_transforms(dit, RuntimeRequest(CPU)).module is dit  # nothing asked: nothing done
    compile_blocks(dit, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
    compiled = sample(dit)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    # 3 blocks x 8 calls, one trace per context length (the two prompts differ; shapes are specialised:
    # HunyuanVideo's context is not padded to a fixed length as Wan's is)
    assert graphs == 2
    torch.testing.assert_close(compiled, plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already compiled"):
        compile_blocks(dit, backend="aot_eager")


def test_wan_record_entries_and_the_model_left_as_it_is():
    dit = WanDiT(TINY_WAN_DIT)
    placed = apply_transforms(dit, RuntimeRequest(CPU, offload=OffloadType.SEQUENTIAL_CPU_OFFLOAD))
    weights = sum(t.numel() * t.element_size() for t in dit.state_dict().values())
    assert placed.record() == {
        "offload": {
            "type": "SEQUENTIAL_CPU_OFFLOAD",
            "applied": False,
            "reason": "the device is the CPU: SEQUENTIAL_CPU_OFFLOAD is a no-op",
            "prefetch_blocks": 1,
            "resident_ratio": 0.0,
        },
        "weights": {"mode": "auto", "fp8_layers": 0, "fp8_bytes": 0, "other_bytes": weights},
    }
    assert not vars(dit).keys() & {"forward", "run_block", "embed"}  # nothing replaced on the instance


@pytest.mark.slow  # Inductor's C++ code generation: ~1 min on the shared 2-core machine, a few s when cached
@pytest.mark.skipif(not compiler_available()[0], reason=compiler_available()[1])
@torch.no_grad()
def test_compile_request_matches_eager():
    torch._dynamo.reset()
    dit = tiny_dit()
    latents, positive, _ = conditioning()
    x = torch.cat([latents, t2v_condition(latents)], dim=1)
    context = dit.prepare_context(positive.text, positive.text_mask, positive.glyph, positive.glyph_mask)
    eager = dit(x, torch.tensor([700.0]), context)
    placed = apply_transforms(dit, RuntimeRequest(CPU, compile=True))
    compiled = placed.module(x, torch.tensor([700.0]), context)
    torch._dynamo.reset()
    # float32: the fused kernels reassociate sums, so round-off, not bits
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
