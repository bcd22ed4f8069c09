"""Quality cost of first-block residual caching (runtime.step_cache) on a tiny Wan DiT, 8-step UniPC.

For each threshold: DiT calls skipped out of all calls, and the relative L2 error of the final latents
against the same trajectory without the cache (same weights, noise, contexts, CFG 5, shift 5). Random
weights: the numbers say how the mechanism behaves, not what a trained 1.3B model loses.

    .venv/bin/python benchmarks/step_cache_quality.py
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.pipelines.wan import Expert, denoise
from telefuser_cli.runtime.step_cache import apply_step_cache
from telefuser_cli.schedulers import make_scheduler
from telefuser_cli.tiny import TINY_DIT


def trajectory(dit: WanDiT, steps: int, latent: tuple[int, int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, *latent, generator=g)
    context = torch.randn(1, 12, TINY_DIT.text_dim, generator=g)
    context_null = torch.randn(1, 6, TINY_DIT.text_dim, generator=g)
    scheduler = make_scheduler("unipc", steps, 5.0)
    return denoise(latents, scheduler, [Expert(dit, 5.0)], [0] * steps, context, context_null)


def main() -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--thresholds", default="0,0.05,0.1,0.15,0.2,0.25,0.3,0.5")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dit = WanDiT(dataclasses.replace(TINY_DIT, num_layers=args.layers)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.05)
    latent = (3, 16, 16)  # 9 frames at 128x128 pixels
    reference = trajectory(dit, args.steps, latent)
    rows = []
    print(
        f"tiny Wan DiT ({args.layers} layers, dim {TINY_DIT.dim}), {args.steps} UniPC steps, CFG 5, latent {latent}"
    )
    print(f"{'threshold':>9} {'skipped':>9} {'rel. L2 error':>14}")
    for threshold in (float(v) for v in args.thresholds.split(",")):
        cache = apply_step_cache(dit, threshold)
        out = trajectory(dit, args.steps, latent)
        error = ((out - reference).norm() / reference.norm()).item()
        rows.append({"threshold": threshold, "skipped": cache.skipped, "calls": cache.calls, "error": error})
        print(f"{threshold:9.3f} {cache.skipped:4d}/{cache.calls:<4d} {error:14.3e}")
        cache.remove()
    return rows


if __name__ == "__main__":
    main()
