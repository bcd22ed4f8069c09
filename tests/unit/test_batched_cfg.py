"""Batched CFG (one forward on [cond; uncond]) against the two-pass guidance, on the tiny DiT."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import assert_rel_close, max_rel_err
from torch.utils._python_dispatch import TorchDispatchMode

from telefuser_cli.families.base import Step
from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.families.wan.tiny import TINY_DIT
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.pipelines import sampling
from telefuser_cli.pipelines.sampling import Batched, TwoPass, sample
from telefuser_cli.schedulers import make_scheduler

pytestmark = pytest.mark.numeric

# Batch 2 against two batches of 1 is not bitwise: the matmuls see twice the rows, and a CPU may pick another
# kernel for them (an AMX Xeon does). Max relative error, float32, measured on an AMD EPYC: 0 under the default
# kernels, ATEN_CPU_CAPABILITY=default/avx2, ONEDNN_MAX_CPU_ISA=AVX2/SSE41, MKL_CBWR=COMPATIBLE/AVX2 and the
# AVX2 set of `make test-kernels`, 1 and 2 threads; 1.7e-6 to 4.0e-6 with the batched side's linears summing
# in another order (K in two halves, or in float64). Real bugs are far above: guidance 4.95 for 5: 1.3e-4 to
# 2.2e-4; 4 for 5: 4.1e-3; swapped branches: 3.2e-2; a dropped block: 0.5.
BATCH_TOL = 2e-5
CPU = torch.device("cpu")


def denoiser(dit, cfg_scale: float = 5.0, cache_context: bool = True, condition=None) -> WanDenoiser:
    return WanDenoiser(dit, cfg_scale, cache_context, condition, CPU)


def step_at(t: float) -> Step:
    return Step(0, torch.tensor(t), torch.tensor(0.0), t)


def tiny_dit(seed: int = 0, **changes) -> WanDiT:
    torch.manual_seed(seed)
    dit = WanDiT(dataclasses.replace(TINY_DIT, **changes)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.1)  # nothing zero-initialised (the head would hide differences)
    return dit


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 3, 8, 8, generator=g)
    context = torch.randn(1, 7, TINY_DIT.text_dim, generator=g)
    context_null = torch.randn(1, 5, TINY_DIT.text_dim, generator=g)  # a different length, as in a real run
    return latents, context, context_null


def test_one_step_matches_two_pass():
    dit = tiny_dit()
    latents, context, context_null = inputs()
    step = step_at(937.0)
    with torch.no_grad():
        two = TwoPass()(denoiser(dit, cache_context=False), latents, step, context, context_null)
        one = Batched()(denoiser(dit, cache_context=False), latents, step, context, context_null)
        off = Batched()(denoiser(dit, 4.95, cache_context=False), latents, step, context, context_null)
    assert_rel_close(one, two, BATCH_TOL)
    assert max_rel_err(off, two) > 5 * BATCH_TOL  # it sees a guidance scale 1% off (measured 2.1e-4)


class CallRecorder(torch.nn.Module):
    """The DiT, recording the batch and context of every call."""

    def __init__(self, dit: WanDiT):
        super().__init__()
        self.dit, self.calls = dit, []

    def forward(self, latents, t, context, **condition):
        self.calls.append((latents.shape[0], context))
        return self.dit(latents, t, context, **condition)


@pytest.mark.parametrize("guidance", [TwoPass(), Batched()], ids=lambda g: g.name)
def test_scale_one_runs_the_conditional_pass_alone(guidance):
    dit = CallRecorder(tiny_dit())
    latents, context, _ = inputs()
    t = torch.tensor([937.0])
    with torch.no_grad():
        # no negative context needed
        out = guidance(denoiser(dit, 1.0, False), latents, step_at(937.0), context, None)
        assert torch.equal(out, dit.dit(latents, t, context))  # the same call on the same data
    assert len(dit.calls) == 1 and dit.calls[0][0] == 1 and dit.calls[0][1] is context


def test_trajectory_matches_two_pass():
    dit = tiny_dit()
    latents, context, context_null = inputs()
    results = []
    for guidance in (TwoPass(), Batched()):
        scheduler = make_scheduler("unipc", 4, 5.0)
        results.append(sample(latents, scheduler, [denoiser(dit)], context, context_null, guidance=guidance))
    assert_rel_close(results[1], results[0], BATCH_TOL)


def test_needs_negative_context():
    dit = tiny_dit()
    latents, context, _ = inputs()
    with pytest.raises(ValueError, match="negative prompt"):
        Batched()(denoiser(dit, cache_context=False), latents, step_at(500.0), context, None)


# Ops that copy a value to the host (a device sync on CUDA); none may run inside the denoising loop.
SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "allclose"}


class SyncRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("guidance", [TwoPass(), Batched()], ids=lambda g: g.name)
@pytest.mark.parametrize("sampler", ["unipc", "dpm++", "euler"])
def test_denoising_loop_makes_no_host_syncs(monkeypatch, guidance, sampler):
    """No .item()/.tolist()/bool(tensor)/cuda.synchronize per step: the loop only queues device work."""
    dit = tiny_dit()
    latents, context, context_null = inputs()
    scheduler = make_scheduler(sampler, 3, 5.0)  # built before: its one-off tables may sync

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in the denoising loop")

    real_steps = sampling._steps

    def steps_then_forbid(*args):
        # the step list is made once before the loop (each step's t as a float, read from the scheduler's
        # host copy); from there on nothing may sync
        steps = real_steps(*args)
        monkeypatch.setattr(torch.Tensor, "item", forbidden)
        monkeypatch.setattr(torch.Tensor, "tolist", forbidden)
        monkeypatch.setattr(torch.cuda, "synchronize", forbidden)
        return steps

    monkeypatch.setattr(sampling, "_steps", steps_then_forbid)
    with SyncRecorder() as recorder:
        sample(latents, scheduler, [denoiser(dit)], context, context_null, guidance=guidance)
    assert recorder.seen == []


def test_rope_table_computed_once_per_run(monkeypatch):
    import telefuser_cli.ops.rope as rope_ops

    calls = []
    real = rope_ops.rope_table
    monkeypatch.setattr(rope_ops, "rope_table", lambda *a, **k: calls.append(a) or real(*a, **k))
    dit = tiny_dit()
    latents, context, context_null = inputs()
    scheduler = make_scheduler("unipc", 3, 5.0)
    sample(latents, scheduler, [denoiser(dit)], context, context_null)
    assert len(calls) == 1  # 3 steps x 2 passes, one table


def test_image_conditioned_dit_batched_matches_two_pass():
    """i2v with the CLIP path through the pipeline's WanDenoiser: y and clip_fea of batch 1 serve both halves."""
    from types import SimpleNamespace

    from telefuser_cli.families.wan.tiny import TINY_DIT_I2V_CLIP

    torch.manual_seed(0)
    dit = WanDiT(TINY_DIT_I2V_CLIP).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.1)
    latents, context, context_null = inputs()
    g = torch.Generator().manual_seed(3)
    condition = SimpleNamespace(
        y=torch.randn(1, 20, *latents.shape[2:], generator=g),
        clip_fea=torch.randn(1, 257, TINY_DIT_I2V_CLIP.image_dim, generator=g),
    )
    wrapped = denoiser(dit, cache_context=False, condition=condition)
    with torch.no_grad():
        two = TwoPass()(wrapped, latents, step_at(937.0), context, context_null)
        one = Batched()(wrapped, latents, step_at(937.0), context, context_null)
    assert_rel_close(one, two, BATCH_TOL)
