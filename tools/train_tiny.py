"""Train the tiny Wan2.1 T2V model shipped in telefuser_cli/assets/tiny_wan21, on a CPU, from a seed.

    .venv/bin/python -m tools.train_tiny --out telefuser_cli/assets/tiny_wan21 --seed 0

Stages: (1) a tiny Wan2.1 VAE (diffusers' AutoencoderKLWan, which supports autograd) learns to
reconstruct synthetic clips (tools/synthetic.py); its latent statistics are then folded into its
1x1x1 quant / post-quant convolutions so that the latents normalised with the fixed Wan2.1 mean/std are
zero-mean, unit-variance per channel. (2) a tiny UMT5 with frozen random weights and a word-level tokenizer
over the synthetic vocabulary. (3) a tiny Wan DiT (diffusers' WanTransformer3DModel) learns the
flow-matching velocity on the VAE latents, with caption dropout to the empty prompt for guidance.
Everything is written in the official layout, reloaded through telefuser's own loaders and checked
against the diffusers modules, then sampled with telefuser's pipeline functions to measure how often the
video's colour and direction match the prompt. A loss curve is written as loss.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import save_file

from telefuser_cli.families.wan.inputs import encode_text, initial_noise
from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.loading import wan as wan_loading
from telefuser_cli.loading.tokenizer import write_tiny_tokenizer
from telefuser_cli.loading.wan_dit_arch import diffusers_to_official_dit
from telefuser_cli.loading.wan_vae_arch import diffusers_to_official_vae
from telefuser_cli.models.umt5 import UMT5Config, UMT5Encoder
from telefuser_cli.models.wan_vae_stats import WAN21_LATENT_MEAN, WAN21_LATENT_STD
from telefuser_cli.pipelines.sampling import sample as sample_trajectory
from telefuser_cli.schedulers import make_scheduler
from tools.synthetic import BACKGROUND, VOCABULARY, ClipSpec, all_specs, analyse_clip, make_clip

SIZE, FRAMES = 32, 9  # what the DiT is trained on (and the pipeline defaults for this model)
DIT_FILE = "diffusion_pytorch_model.safetensors"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
VAE_FILE = "Wan2.1_VAE.pth"
TOKENIZER_DIR = "google/umt5-xxl"

VAE_ARGS = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True])  # fmt: skip
T5_CONFIG = UMT5Config(vocab_size=32, dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2)
DIT_ARGS = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16,
                out_channels=16, text_dim=T5_CONFIG.dim, freq_dim=256, ffn_dim=512, num_layers=4,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)  # fmt: skip
TEXT_LEN = 512
SHIFT = 5.0

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), console=console)  # fmt: skip


def _advance(progress: Progress, task, step: int, total: int, losses: list[float]) -> None:
    """Advance the bar; without a terminal (logs), print a line every 5% instead."""
    info = f"loss {np.mean(losses[-50:]):.4f}"
    progress.update(task, advance=1, info=info)
    if not progress.console.is_terminal and (step + 1) % max(1, total // 20) == 0:
        name = progress.tasks[task].description
        progress.console.print(f"{name} {step + 1}/{total} {info} {progress.tasks[task].elapsed:.0f}s")


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def clip_batch(rng: np.random.Generator, n: int, frames: int, specs: list[ClipSpec] | None = None):
    """n clips -> ([n, 3, F, H, W], [spec index into all_specs()])."""
    order = all_specs()
    specs = specs or [order[i] for i in rng.integers(len(order), size=n)]
    clips = [make_clip(rng, spec, frames, SIZE, SIZE)[0] for spec in specs]
    return torch.stack(clips), [order.index(spec) for spec in specs]


# ----------------------------------------------------------------------------------------------- VAE
@torch.no_grad()
def inflate_(vae) -> None:
    """Start as a per-frame image autoencoder: causal convolutions see only the current frame (past taps
    zero, the current tap scaled to keep the output variance), the encoder's temporal downsampling keeps
    the last frame of each window and the decoder's temporal upsampling repeats each frame. Training then
    learns the spatial code first and the motion inside a latent frame from there (CPU steps are scarce)."""
    for name, module in vae.named_modules():
        weight = getattr(module, "weight", None)
        if weight is None or weight.ndim != 5 or weight.shape[2] != 3:
            continue
        if name.endswith("time_conv"):
            out_dim, in_dim = weight.shape[:2]
            weight.zero_()
            for start in range(0, out_dim, in_dim):
                weight[start : start + in_dim, :, 2, 0, 0] = torch.eye(in_dim)
            module.bias.zero_()
        else:
            weight[:, :, 2] *= math.sqrt(3.0)
            weight[:, :, :2] = 0.0


def train_vae(steps: int, rng: np.random.Generator, device: torch.device, lr: float = 2e-3,
              foreground_weight: float = 8.0, noise: float = 0.1, vae=None):  # fmt: skip
    """Train (or continue training `vae`) for `steps` steps -> (diffusers AutoencoderKLWan on cpu, losses)."""
    from diffusers import AutoencoderKLWan

    if vae is None:
        vae = AutoencoderKLWan(**VAE_ARGS)
        inflate_(vae)
    vae.train().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    background = torch.tensor(BACKGROUND, device=device).view(1, 3, 1, 1, 1) * 2 - 1
    losses = []
    with _progress() as progress:
        task = progress.add_task("VAE", total=steps, info="")
        for step in range(steps):
            # 5-frame clips (one chunk after the first frame) and 9-frame ones, so that the causal caches
            # also learn a chunk that follows another.
            frames, batch = (9, 2) if step % 2 else (5, 4)
            x = clip_batch(rng, batch, frames)[0].to(device)
            for group in opt.param_groups:
                group["lr"] = _lr(step, steps, lr, 30)
            mu = vae.encode(x).latent_dist.mean
            # Noise at 10% of each channel's spread: the decoder must tolerate imprecise latents.
            scale = mu.detach().std(dim=(0, 2, 3, 4), keepdim=True)
            z = mu + noise * scale * torch.randn_like(mu)
            y = vae.decode(z).sample
            foreground = ((x - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
            loss = ((y - x) ** 2 * (1 + foreground_weight * foreground)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            _advance(progress, task, step, steps, losses)
    return vae.eval().cpu(), losses


@torch.no_grad()
def reconstruction_check(vae, n: int = 24) -> dict[str, float]:
    """How often a reconstructed clip still reads back as its caption (colour, direction), and its MSE."""
    x, index = clip_batch(np.random.default_rng(99), n, FRAMES)
    y = torch.cat([vae.decode(vae.encode(part).latent_dist.mean).sample for part in x.split(8)])
    specs = [all_specs()[i] for i in index]
    found = [analyse_clip(clip) for clip in y]
    result = {"mse": ((y - x) ** 2).mean().item(),
              "colour": float(np.mean([a.colour == s.colour for a, s in zip(found, specs, strict=True)])),
              "direction": float(np.mean([a.direction == s.direction for a, s in zip(found, specs, strict=True)]))}  # fmt: skip
    console.print(f"VAE reconstruction: {result}")
    return result


@torch.no_grad()
def fold_latent_stats(vae, rng: np.random.Generator, n: int = 48) -> None:
    """Make (mu - WAN21_MEAN) / WAN21_STD zero-mean unit-variance per channel, exactly, by an affine change
    of the latent space folded into the quant conv (mu rows) and the post-quant conv (its input)."""
    x, _ = clip_batch(rng, n, FRAMES)
    mu = torch.cat([vae.encode(part).latent_dist.mean for part in x.split(8)])
    m, s = mu.mean(dim=(0, 2, 3, 4)), mu.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    target_m, target_s = torch.tensor(WAN21_LATENT_MEAN), torch.tensor(WAN21_LATENT_STD)
    a = target_s / s  # mu' = target_m + a (mu - m)
    quant, post = vae.quant_conv, vae.post_quant_conv
    z = len(m)
    quant.weight[:z] *= a.view(-1, 1, 1, 1, 1)
    quant.bias[:z] = (quant.bias[:z] - m) * a + target_m
    quant.bias[z:] += 2 * torch.log(a)  # log-variance follows the scale (unused at inference)
    # post(mu) = W mu + b with mu = m + (mu' - target_m) / a
    weight = post.weight[:, :, 0, 0, 0]
    post.bias += weight @ (m - target_m / a)
    post.weight.copy_((weight / a.view(1, -1))[:, :, None, None, None])


# ------------------------------------------------------------------------------------------ text encoder
def write_text_encoder(directory: Path, seed: int) -> None:
    """Frozen random UMT5 (bf16 file as released) and a tokenizer over the synthetic vocabulary."""
    generator = torch.Generator().manual_seed(seed + 1)
    t5 = UMT5Encoder(T5_CONFIG)
    with torch.no_grad():
        for name, param in sorted(t5.named_parameters()):
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[-1]))
            elif "norm" in name:
                param.fill_(1.0)
    torch.save({k: v.to(torch.bfloat16) for k, v in t5.state_dict().items()}, directory / T5_FILE)
    write_tiny_tokenizer(directory / TOKENIZER_DIR, list(VOCABULARY))


def caption_contexts(directory: Path) -> tuple[torch.Tensor, list[int]]:
    """[len(all_specs()) + 1, TEXT_LEN, dim] zero-padded features (the last row is the empty prompt), and
    each prompt's token count."""
    tokenizer = wan_loading.load_wan_tokenizer(directory / TOKENIZER_DIR)
    files = wan_loading.locate(directory, "text_encoder", T5_FILE)
    encoder = wan_loading.load_text_encoder(files, dtype=torch.float32, device=torch.device("cpu"))
    features = encode_text(encoder, tokenizer, [s.caption for s in all_specs()] + [""], torch.device("cpu"))
    padded = torch.stack([F.pad(f, (0, 0, 0, TEXT_LEN - f.shape[0])) for f in features])
    return padded, [f.shape[0] for f in features]


# ----------------------------------------------------------------------------------------------- DiT
class _PaddedCrossAttention:
    """diffusers cross-attention over a compressed context, exactly equal to the zero-padded one.

    The official DiT pads the text to TEXT_LEN tokens with zeros and attends to all of them; the padded
    rows all get the same key and value. Attending to the L real tokens plus ONE zero token whose logit
    is raised by log(TEXT_LEN - L) gives the same softmax (the copies' weights summed), at 7 keys instead
    of 512: that is what makes CPU training affordable. `bias` [B, 1, 1, K] is set before each forward.
    """

    def __init__(self, inner) -> None:
        self.inner, self.bias = inner, None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        return self.inner(attn, hidden_states, encoder_hidden_states, self.bias, rotary_emb)


def compress_contexts(contexts: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, TEXT_LEN, D] zero-padded contexts -> ([N, K, D] with K = max L + 1, logit bias [N, K])."""
    k = max(lengths) + 1
    bias = torch.full((len(lengths), k), -1e9)
    for i, length in enumerate(lengths):
        bias[i, :length] = 0.0
        bias[i, length] = math.log(TEXT_LEN - length)
    return contexts[:, :k].clone(), bias


def _with_bias(processors: list[_PaddedCrossAttention], bias: torch.Tensor) -> None:
    for processor in processors:
        processor.bias = bias[:, None, None, :]


def train_dit(latents, labels, contexts, lengths, steps: int, seed: int, device: torch.device, batch: int = 32,
              lr: float = 1e-3, dropout: float = 0.15):  # fmt: skip
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed + 2)
    dit = WanTransformer3DModel(**DIT_ARGS).train()
    ema = copy.deepcopy(dit).eval().requires_grad_(False)
    processors = []
    for block in dit.blocks:
        processors.append(_PaddedCrossAttention(block.attn2.processor))
        block.attn2.processor = processors[-1]
    short, bias = compress_contexts(contexts, lengths)
    with torch.no_grad():  # the compressed context must reproduce the padded one
        x, t = latents[:2], torch.tensor([900.0, 100.0])
        _with_bias(processors, bias[[0, -1]])
        fast = dit(x, t, short[[0, -1]], return_dict=False)[0]
        full = ema(x, t, contexts[[0, -1]], return_dict=False)[0]
        if _rel(fast, full) > 1e-4:
            raise RuntimeError(
                f"compressed cross-attention differs from the padded one: {_rel(fast, full):.2e}"
            )
    dit.to(device)
    ema.to(device)
    opt = torch.optim.AdamW(dit.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed + 3)
    null = contexts.shape[0] - 1
    losses = []
    with _progress() as progress:
        task = progress.add_task("DiT", total=steps, info="")
        for step in range(steps):
            index = torch.randint(len(latents), (batch,), generator=generator)
            x0 = latents[index].to(device)
            label = labels[index].clone()
            label[torch.rand(batch, generator=generator) < dropout] = null
            # Half the sigmas as the shifted sampling grid spends them, half uniform (the low-noise end).
            u = torch.rand(batch, generator=generator)
            shifted = SHIFT * u / (1 + (SHIFT - 1) * u)
            sigma = torch.where(torch.rand(batch, generator=generator) < 0.5, shifted, u)
            noise = torch.randn(x0.shape, generator=generator).to(device)
            sigma = sigma.to(device)
            s = sigma.view(-1, 1, 1, 1, 1)
            xt = (1 - s) * x0 + s * noise
            for group in opt.param_groups:
                group["lr"] = _lr(step, steps, lr, 100)
            _with_bias(processors, bias[label].to(device))
            pred = dit(xt, sigma * 1000, short[label].to(device), return_dict=False)[0]
            loss = F.mse_loss(pred, noise - x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
            opt.step()
            decay = min(0.995, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), dit.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
            losses.append(loss.item())
            _advance(progress, task, step, steps, losses)
    return ema.cpu(), losses


def dit_config_json(dit) -> dict:
    cfg = dit.config
    return {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": cfg.num_attention_heads *
            cfg.attention_head_dim, "eps": cfg.eps, "ffn_dim": cfg.ffn_dim, "freq_dim": cfg.freq_dim,
            "in_dim": cfg.in_channels, "model_type": "t2v", "num_heads": cfg.num_attention_heads,
            "num_layers": cfg.num_layers, "out_dim": cfg.out_channels, "text_len": TEXT_LEN}  # fmt: skip


# ------------------------------------------------------------------------------------- checks, evaluation
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@torch.no_grad()
def verify(directory: Path, vae_ref, dit_ref, contexts) -> dict[str, float]:
    """Reload through telefuser's loaders and compare with the diffusers modules that were trained."""
    cpu = torch.device("cpu")
    vae = wan_loading.load_vae(
        wan_loading.locate(directory, "vae", VAE_FILE), dtype=torch.float32, device=cpu
    )
    mean = torch.tensor(WAN21_LATENT_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(WAN21_LATENT_STD).view(1, -1, 1, 1, 1)
    x, _ = clip_batch(np.random.default_rng(123), 2, FRAMES)
    z = vae.encode(x)
    z_ref = (vae_ref.encode(x).latent_dist.mean - mean) / std
    video, video_ref = vae.decode(z_ref), vae_ref.decode(z_ref * std + mean).sample
    dit = wan_loading.load_dit(wan_loading.locate(directory, "dit", DIT_FILE), dtype=torch.float32, device=cpu,
                               attn_backend="TORCH_SDPA", expected_task="t2v", model_name="tiny_wan21")  # fmt: skip
    t = torch.tensor([999.0, 420.0])
    features = [contexts[0, :6], contexts[-1, :1]]
    out = torch.cat([dit(z_ref[i : i + 1], t[i : i + 1], features[i][None]) for i in range(2)])
    out_ref = dit_ref(z_ref, t, contexts[[0, -1]], return_dict=False)[0]
    return {"vae_encode_rel": _rel(z, z_ref), "vae_decode_max_abs": (video - video_ref).abs().max().item(),
            "dit_rel": _rel(out, out_ref), "latent_std": z.std().item(), "latent_mean": z.mean().item()}  # fmt: skip


@torch.no_grad()
def sample(directory: Path, prompts: list[str], seeds: list[int], cfg: float, steps: int = 8,
           shift: float = SHIFT, frames: int = FRAMES) -> list[torch.Tensor]:  # fmt: skip
    """Videos [3, F, H, W] in [-1, 1] for each (prompt, seed), with telefuser's loaders and pipeline."""
    cpu = torch.device("cpu")
    tokenizer = wan_loading.load_wan_tokenizer(directory / TOKENIZER_DIR)
    t5 = wan_loading.load_text_encoder(wan_loading.locate(directory, "text_encoder", T5_FILE),
                                       dtype=torch.float32, device=cpu)  # fmt: skip
    dit = wan_loading.load_dit(wan_loading.locate(directory, "dit", DIT_FILE), dtype=torch.float32, device=cpu,
                               attn_backend="TORCH_SDPA", expected_task="t2v", model_name="tiny_wan21")  # fmt: skip
    vae = wan_loading.load_vae(
        wan_loading.locate(directory, "vae", VAE_FILE), dtype=torch.float32, device=cpu
    )
    null = encode_text(t5, tokenizer, [""], cpu)[0][None]
    videos = []
    for prompt in prompts:
        context = encode_text(t5, tokenizer, [prompt], cpu)[0][None]
        for seed in seeds:
            latents = initial_noise((1, 16, (frames - 1) // 4 + 1, SIZE // 8, SIZE // 8), seed, "cpu", cpu)
            scheduler = make_scheduler("unipc", steps, shift)
            denoiser = WanDenoiser(dit, cfg, True, None, cpu)
            latents = sample_trajectory(latents, scheduler, [denoiser], context, null if cfg != 1.0 else None)
            videos.append(vae.decode(latents)[0])
    return videos


def match_rates(directory: Path, cfg: float, seeds: list[int], specs: list[ClipSpec]) -> dict[str, float]:
    videos = sample(directory, [s.caption for s in specs], seeds, cfg)
    expected = [spec for spec in specs for _ in seeds]
    found = [analyse_clip(v) for v in videos]
    colour = np.mean([a.colour == e.colour for a, e in zip(found, expected, strict=True)])
    direction = np.mean([a.direction == e.direction for a, e in zip(found, expected, strict=True)])
    both = np.mean([a.colour == e.colour and a.direction == e.direction
                    for a, e in zip(found, expected, strict=True)])  # fmt: skip
    return {"colour": float(colour), "direction": float(direction), "both": float(both)}


def plot_losses(path: Path, curves: dict[str, list[float]]) -> None:
    """Loss curves (log scale, smoothed) as a PNG, with PIL only."""
    from PIL import Image, ImageDraw

    width, height, pad = 420, 260, 36
    image = Image.new("RGB", (width * len(curves), height), "white")
    draw = ImageDraw.Draw(image)
    for panel, (name, values) in enumerate(curves.items()):
        left = panel * width
        values = np.log10(np.maximum(np.asarray(values, dtype=np.float64), 1e-8))
        window = max(1, len(values) // 50)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        low, high = smooth.min(), smooth.max() + 1e-9
        box = (left + pad, pad // 2, left + width - pad // 2, height - pad)
        draw.rectangle(box, outline="black")
        points = [(box[0] + (box[2] - box[0]) * i / max(1, len(smooth) - 1),
                   box[3] - (box[3] - box[1]) * (v - low) / (high - low)) for i, v in enumerate(smooth)]  # fmt: skip
        draw.line(points, fill=(200, 40, 40), width=2)
        draw.text((box[0] + 4, box[1] + 4), f"{name} loss (log10, smoothed)", fill="black")
        draw.text((box[0], box[3] + 4), f"0 .. {len(values)} steps", fill="black")
        draw.text((box[0] + 4, box[1] + 18), f"{10**high:.3g} .. {10**low:.3g}", fill="black")
    image.save(path)


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("telefuser_cli/assets/tiny_wan21"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=2000)
    parser.add_argument("--dit-steps", type=int, default=3000)
    parser.add_argument("--clips", type=int, default=1024, help="clips encoded for the DiT")
    parser.add_argument("--eval-seeds", type=int, default=2, help="seeds per caption in the final check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where to train (cpu reproduces the shipped weights)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    times: dict[str, float] = {}
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        start = time.perf_counter()
        vae_ref, vae_losses = train_vae(args.vae_steps, rng, torch.device(args.device))
        fold_latent_stats(vae_ref, rng)
        reconstruction = reconstruction_check(vae_ref)
        torch.save(diffusers_to_official_vae({k: v.detach().clone() for k, v in vae_ref.state_dict().items()}),
                   staging / VAE_FILE)  # fmt: skip
        times["vae"] = time.perf_counter() - start

        start = time.perf_counter()
        write_text_encoder(staging, args.seed)
        contexts, lengths = caption_contexts(staging)
        vae = wan_loading.load_vae(wan_loading.locate(staging, "vae", VAE_FILE), dtype=torch.float32,
                                   device=torch.device("cpu"))  # fmt: skip
        order = all_specs()
        specs = [order[i % len(order)] for i in rng.permutation(args.clips)]
        latents, labels = [], []
        for i in range(0, args.clips, 16):
            x, index = clip_batch(rng, len(specs[i : i + 16]), FRAMES, specs[i : i + 16])
            latents.append(vae.encode(x))
            labels += index
        latents, labels = torch.cat(latents), torch.tensor(labels)
        console.print(
            f"encoded {len(latents)} clips: latent std {latents.std():.3f} mean {latents.mean():.3f}"
        )
        times["encode"] = time.perf_counter() - start

        start = time.perf_counter()
        dit_ref, dit_losses = train_dit(
            latents, labels, contexts, lengths, args.dit_steps, args.seed, torch.device(args.device)
        )
        state = diffusers_to_official_dit(
            {k: v.detach().contiguous() for k, v in dit_ref.state_dict().items()}
        )
        save_file(state, str(staging / DIT_FILE))
        (staging / "config.json").write_text(json.dumps(dit_config_json(dit_ref), indent=2) + "\n")
        times["dit"] = time.perf_counter() - start

        checks = verify(staging, vae_ref, dit_ref, contexts)
        plot_losses(staging / "loss.png", {"VAE": vae_losses, "DiT": dit_losses})
        start = time.perf_counter()
        seeds = list(range(100, 100 + args.eval_seeds))
        rates = {cfg: match_rates(staging, cfg, seeds, order) for cfg in (1.0, 4.0)} if seeds else {}
        times["eval"] = time.perf_counter() - start
        report = {
            "seed": args.seed,
            "times_s": times,
            "checks": checks,
            "vae_reconstruction": reconstruction,
            "match_rates": rates,
            "final_loss": {"vae": float(np.mean(vae_losses[-50:])), "dit": float(np.mean(dit_losses[-200:]))},
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        (staging / "training.json").write_text(json.dumps(report, indent=2) + "\n")
        console.print_json(json.dumps(report))
        if out.exists():
            shutil.rmtree(out)
        staging.chmod(0o755)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
