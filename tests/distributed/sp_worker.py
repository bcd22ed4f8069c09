"""One rank of the distributed checks; run under torchrun (gloo, CPU) by test_parallel.py.

usage: torchrun --nproc-per-node N sp_worker.py OUT_JSON [LAYOUT ...]   (LAYOUT: cfg,ulysses,ring)

Every rank builds the same tiny DiT (TINY_DIT: 4 heads) and inputs, runs the single-process reference
itself, then each layout's parallel run, and compares. Rank 0 writes, per check, the max abs / relative error
against the reference and whether all ranks ended with bit-identical latents.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import torch
import torch.distributed as dist

from telefuser_cli.families.wan.inputs import initial_noise
from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.families.wan.tiny import TINY_DIT
from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig
from telefuser_cli.pipelines.sampling import CfgParallel, TwoPass, sample
from telefuser_cli.runtime.distributed import build_groups, init_distributed
from telefuser_cli.runtime.transforms import RuntimeRequest, apply_transforms
from telefuser_cli.schedulers import make_scheduler

STEPS, SHIFT, CFG_SCALE, SEED = 3, 5.0, 5.0, 7
# latent shapes [C, F, H, W]: 2x4x4 = 32 tokens (divisible by 2 and 4), 3x3x3 = 27 tokens (padded), 5x1x1 = 5
# tokens (4 ranks: shards of 2, 2, 1 and 0 real tokens, so one shard is padding only)
SHAPES = {"even32": (16, 2, 8, 8), "odd27": (16, 3, 6, 6), "five5": (16, 5, 2, 2)}
TI2V = dataclasses.replace(TINY_DIT, model_type="ti2v")


def tiny_dit(cfg: WanDiTConfig, dtype: torch.dtype = torch.float32) -> WanDiT:
    """The same random weights on every rank (nothing zero)."""
    generator = torch.Generator().manual_seed(0)
    model = WanDiT(cfg)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim >= 2:
                param.copy_(
                    torch.randn(param.shape, generator=generator) / math.sqrt(math.prod(param.shape[1:]))
                )
            else:
                base = 1.0 if "norm" in name else 0.0
                param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
    return model.to(dtype).eval()


def contexts():
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(1, 9, TINY_DIT.text_dim, generator=generator),
            torch.randn(1, 5, TINY_DIT.text_dim, generator=generator))  # fmt: skip


def run(dit: WanDiT, shape, guidance=None) -> torch.Tensor:
    cpu = torch.device("cpu")
    context, context_null = contexts()
    latents = initial_noise((1, *shape), SEED, "cpu", cpu)
    scheduler = make_scheduler("unipc", STEPS, SHIFT)
    denoiser = WanDenoiser(dit, CFG_SCALE, True, None, cpu)
    return sample(latents, scheduler, [denoiser], context, context_null, guidance=guidance)


def parallelize(dit: WanDiT, groups) -> torch.nn.Module:
    """The DiT as the driver runs it: transformed from its runtime plan (sequence parallel when sp > 1)."""
    return apply_transforms(dit, RuntimeRequest(torch.device("cpu"), groups=groups)).module


def compare(ours: torch.Tensor, reference: torch.Tensor) -> dict:
    parts = [torch.empty_like(ours) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ours.contiguous())
    return {
        "max_abs": (ours - reference).abs().max().item(),
        "rel": ((ours - reference).abs().max() / reference.abs().max()).item(),
        "ranks_identical": all(torch.equal(part, parts[0]) for part in parts),
    }


def main() -> None:
    torch.set_num_threads(1)
    out_path, layouts = sys.argv[1], [tuple(int(n) for n in s.split(",")) for s in sys.argv[2:]]
    groups = init_distributed(*layouts[0])
    results = {"argv": sys.argv[1:], "world_size": dist.get_world_size()}
    references = {name: run(tiny_dit(TINY_DIT), shape) for name, shape in SHAPES.items()}
    for layout in layouts:
        if layout != layouts[0]:
            groups = build_groups(*layout)
        guidance = CfgParallel(groups.cfg_group, groups.cfg_rank) if groups.cfg_degree > 1 else TwoPass()
        dit = parallelize(tiny_dit(TINY_DIT), groups)
        for name, shape in SHAPES.items():
            ours = run(dit, shape, guidance)
            results[f"{layout}/{name}"] = compare(ours, references[name])
        if groups.sp_degree == 1:
            continue
        # one forward: per-token timesteps (ti2v) shard the modulation; bf16 run dtype
        context, _ = contexts()
        x = initial_noise((1, *SHAPES["odd27"]), SEED, "cpu", torch.device("cpu"))
        t = torch.linspace(900.0, 100.0, 27)[None]
        with torch.no_grad():
            reference = tiny_dit(TI2V)(x, t, context)
            results[f"{layout}/ti2v_per_token"] = compare(parallelize(tiny_dit(TI2V), groups)(x, t, context),
                                                          reference)  # fmt: skip
            reference = tiny_dit(TINY_DIT, torch.bfloat16)(x, t[:, 0], context)
            ours = parallelize(tiny_dit(TINY_DIT, torch.bfloat16), groups)(x, t[:, 0], context)
            results[f"{layout}/bf16_forward"] = compare(ours, reference)
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
