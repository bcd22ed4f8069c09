"""Quality cost of first-block residual caching (runtime.step_cache) on a tiny Wan DiT, 8-step UniPC.

For each threshold: DiT calls skipped out of all calls, and the relative L2 error of the final latents
against the same trajectory without the cache (same weights, noise, contexts, CFG 5, shift 5). By default
random weights and random text features: the numbers say how the mechanism behaves, not what a trained
1.3B model loses. ``--model-dir`` runs a Wan2.1 directory instead (e.g. the shipped trained tiny model),
with its T5 and a real prompt and the empty negative prompt.

    .venv/bin/python benchmarks/step_cache_quality.py
    .venv/bin/python benchmarks/step_cache_quality.py --model-dir telefuser_cli/assets/tiny_wan21
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.families.wan.tiny import TINY_DIT
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.pipelines.sampling import sample
from telefuser_cli.runtime.transforms import RuntimeRequest, apply_transforms
from telefuser_cli.schedulers import make_scheduler


def random_model(layers: int) -> tuple[WanDiT, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    dit = WanDiT(dataclasses.replace(TINY_DIT, num_layers=layers)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(2)
    context = torch.randn(1, 12, TINY_DIT.text_dim, generator=g)
    context_null = torch.randn(1, 6, TINY_DIT.text_dim, generator=g)
    return dit, context, context_null


def directory_model(root: Path, prompt: str) -> tuple[WanDiT, torch.Tensor, torch.Tensor]:
    from telefuser_cli.families.wan.inputs import encode_text
    from telefuser_cli.loading import wan as wan_loading

    cpu = torch.device("cpu")
    tokenizer = wan_loading.load_wan_tokenizer(wan_loading.tokenizer_dir(root, "google/umt5-xxl"))
    files = wan_loading.locate(root, "text_encoder", "models_t5_umt5-xxl-enc-bf16.pth")
    t5 = wan_loading.load_text_encoder(files, dtype=torch.float32, device=cpu)
    context, context_null = (f[None] for f in encode_text(t5, tokenizer, [prompt, ""], cpu))
    dit = wan_loading.load_dit(
        wan_loading.locate(root, "dit", "diffusion_pytorch_model.safetensors"),
        dtype=torch.float32,
        device=cpu,
        attn_backend="TORCH_SDPA",
        expected_task="t2v",
        model_name=root.name,
    )
    return dit, context, context_null


def trajectory(dit, context, context_null, steps: int, latent: tuple[int, int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, *latent, generator=g)
    scheduler = make_scheduler("unipc", steps, 5.0)
    denoiser = WanDenoiser(dit, 5.0, True, None, torch.device("cpu"))
    return sample(latents, scheduler, [denoiser], context, context_null)


def main() -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--thresholds", default="0,0.05,0.1,0.15,0.2,0.25,0.3,0.5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--model-dir", type=Path, help="a Wan2.1 t2v directory (official layout) instead of random"
    )
    ap.add_argument("--prompt", default="a red ball moving right")
    ap.add_argument("--size", type=int, default=128, help="square video size in pixels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model_dir is None:
        dit, context, context_null = random_model(args.layers)
        what = f"random tiny Wan DiT ({args.layers} layers, dim {TINY_DIT.dim})"
    else:
        dit, context, context_null = directory_model(args.model_dir, args.prompt)
        what = f"{args.model_dir} ({len(dit.blocks)} layers, dim {dit.config.dim}), prompt {args.prompt!r}"
    latent = (3, args.size // 8, args.size // 8)  # 9 frames
    reference = trajectory(dit, context, context_null, args.steps, latent)
    rows = []
    print(f"{what}, {args.steps} UniPC steps, CFG 5, latent {latent}")
    print(f"{'threshold':>9} {'skipped':>9} {'rel. L2 error':>14}")
    for threshold in (float(v) for v in args.thresholds.split(",")):
        placed = apply_transforms(dit, RuntimeRequest(torch.device("cpu"), step_cache=threshold))
        cache = placed.cache  # the DiT itself is left as it is: each threshold gets a fresh cache
        out = trajectory(placed.module, context, context_null, args.steps, latent)
        error = ((out - reference).norm() / reference.norm()).item()
        rows.append({"threshold": threshold, "skipped": cache.skipped, "calls": cache.calls, "error": error})
        print(f"{threshold:9.3f} {cache.skipped:4d}/{cache.calls:<4d} {error:14.3e}")
    return rows


if __name__ == "__main__":
    main()
