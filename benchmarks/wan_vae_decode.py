"""Wan VAE decode: telefuser vs diffusers' AutoencoderKLWan, real size, random weights.

``--vae 2.1`` (default): the Wan2.1 VAE (dim 96, 16 latent channels, 8x). ``--vae 2.2``: the Wan2.2 VAE
(encoder 160 / decoder 256, 48 latent channels, 16x); diffusers gets its Wan2.2 configuration
(``is_residual``, ``patch_size=2``) and our weights under its key names (it ships no converter for them).

Peak memory (first, while this process is still small): each decoder in its own fresh subprocess. The
peak is the decode high-water mark VmHWM, reset through /proc/self/clear_refs just before the decode, so
it counts the resident weights and runtime plus everything the decode allocates; the growth is that peak
minus the resident set just before the decode (the decode's own working set, what an out-of-memory
depends on: the weights are the same size for both). (ru_maxrss is not used: Linux carries the parent's
peak at fork into the child's ru_maxrss.) Time: then both decoders in this process on the same weights
(ours first, then diffusers; a tiny warm-up decode each first), wall clock (the ratio) and process CPU
time, plus their max abs difference and, in bf16, each one's max abs difference to our float32 decode.

bf16: both models' weights in bf16 (diffusers: ``.to(torch.bfloat16)``, as its pipelines do). Ours
computes its RMS norms in float32 and returns float32 video; diffusers' output is cast to float32.

``--device cuda``: both on the GPU; memory is then the device's allocated high-water mark (growth over what
was allocated before the decode), measured the same way in each fresh subprocess.

``--tiled``: ours through ``WanVAE.tiled_decode`` with the default tiles of ``pipeline.tile_size`` /
``pipeline.tile_stride``; ``--ours-only``: no diffusers (e.g. for a 480p tiled decode).

    .venv/bin/python benchmarks/wan_vae_decode.py --frames 2 --height 8 --width 8
    .venv/bin/python benchmarks/wan_vae_decode.py --frames 21 --height 60 --width 104 --tiled --ours-only
    .venv/bin/python benchmarks/wan_vae_decode.py --vae 2.2 --frames 2 --height 4 --width 4

The last line is ``ratio=<ours/peer time> mem_ratio=<ours/peer peak> growth_ratio=<ours/peer growth>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the Wan2.2 official -> diffusers key map

from telefuser_cli.config.schema import PipelineConfig  # noqa: E402
from telefuser_cli.models.wan22_vae import Wan22VAE, Wan22VAEConfig  # noqa: E402
from telefuser_cli.models.wan_vae import WanVAE, WanVAEConfig  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CONFIGS = {"2.1": WanVAEConfig(), "2.2": Wan22VAEConfig()}


def build(which: str, dtype: torch.dtype, version: str, ours: WanVAE | None = None):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    cfg = CONFIGS[version]
    torch.manual_seed(0)
    if which == "ours":
        return (Wan22VAE if version == "2.2" else WanVAE)(cfg).eval().to(dtype)
    if version == "2.2":
        from wan22_vae_keys import diffusers_wan22_vae

        peer = diffusers_wan22_vae(cfg, None if ours is None else ours.state_dict())
    else:
        peer = AutoencoderKLWan().eval()
        if ours is not None:
            peer.load_state_dict(convert_wan_vae_to_diffusers(dict(ours.state_dict())), strict=True)
    return peer if dtype == torch.float32 else peer.to(dtype)


def decoder(which: str, model, dtype: torch.dtype, version: str, tiled: bool = False):
    """A callable on NORMALISED latents for both models (diffusers is given de-normalised ones)."""
    if which == "ours" and tiled:
        defaults = PipelineConfig()
        return lambda z: model.tiled_decode(z, tuple(defaults.tile_size), tuple(defaults.tile_stride))
    if which == "ours":
        return model.decode
    cfg = CONFIGS[version]
    shape = (1, cfg.z_dim, 1, 1, 1)
    mean = torch.tensor(cfg.latent_mean).view(shape)
    inv_std = 1.0 / torch.tensor(cfg.latent_std).view(shape)
    return lambda z: model.decode((z / inv_std.to(z.device) + mean.to(z.device)).to(dtype)).sample.float()


def latent(args) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, CONFIGS[args.vae].z_dim, args.frames, args.height, args.width, generator=g)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, z) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, process CPU seconds, output) of one decode after a tiny warm-up decode."""
    with torch.inference_mode():
        fn(torch.zeros(1, z.shape[1], 2, 4, 4, device=z.device))  # warm-up: kernels and allocator
        _sync(z.device)
        start, cpu = time.perf_counter(), time.process_time()
        out = fn(z)
        _sync(z.device)
    return time.perf_counter() - start, time.process_time() - cpu, out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(args) -> None:
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    model = build(args.child, dtype, args.vae).to(device)
    fn, z = decoder(args.child, model, dtype, args.vae, args.tiled), latent(args).to(device)
    with torch.inference_mode():
        fn(torch.zeros(1, z.shape[1], 2, 4, 4, device=device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        seconds, _, _ = timed(fn, z)
        peak = torch.cuda.max_memory_allocated(device)
        print(json.dumps({"seconds": seconds, "base_kib": base // 1024, "hwm_kib": peak // 1024}))
        return
    base = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    seconds, _, _ = timed(fn, z)
    print(json.dumps({"seconds": seconds, "base_kib": base, "hwm_kib": _status_kib("VmHWM")}))


def measure_memory(args, which: str) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--dtype", args.dtype, "--device", args.device]
    cmd += ["--vae", args.vae]
    cmd += [f"--{name}={getattr(args, name)}" for name in ("frames", "height", "width", "threads")]
    if args.tiled:
        cmd.append("--tiled")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=5, help="latent frames T")
    p.add_argument("--height", type=int, default=30, help="latent height")
    p.add_argument("--width", type=int, default=52, help="latent width")
    p.add_argument("--vae", choices=sorted(CONFIGS), default="2.1", help="which Wan VAE")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-memory", action="store_true", help="no subprocess memory runs (mem_ratio=nan)")
    p.add_argument("--tiled", action="store_true", help="ours decodes in the default spatial tiles")
    p.add_argument("--ours-only", action="store_true", help="no diffusers run (ratios are nan)")
    p.add_argument("--child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    sides = ["ours"] if args.ours_only else ["ours", "diffusers"]

    mem = {}
    held = "allocated on the device" if args.device.startswith("cuda") else "resident"
    if not args.skip_memory:
        mem = {which: measure_memory(args, which) for which in sides}
        for name, m in mem.items():
            peak, base = m["hwm_kib"] / 2**20, m["base_kib"] / 2**20
            print(
                f"{name:9s} decode peak {peak:5.2f} GiB (of which {held} before the decode {base:.2f} GiB: "
                f"growth {peak - base:.2f} GiB), {m['seconds']:.2f} s wall in its own process",
                flush=True,
            )

    dtype = DTYPES[args.dtype]
    device = torch.device(args.device)
    z = latent(args).to(device)
    ours = build("ours", dtype, args.vae).to(device)
    t_ours, c_ours, y_ours = timed(decoder("ours", ours, dtype, args.vae, args.tiled), z)
    print(f"Wan{args.vae} VAE latent {tuple(z.shape)} -> video {tuple(y_ours.shape)} {args.dtype}, {args.threads} threads"
          f"{', tiled' if args.tiled else ''}")  # fmt: skip
    print(f"ours      {t_ours:8.2f} s wall {c_ours:8.2f} s CPU", flush=True)
    ratio = cpu_ratio = mem_ratio = growth_ratio = float("nan")
    if not args.ours_only:
        peer = build("diffusers", dtype, args.vae, ours=ours).to(device)
        t_peer, c_peer, y_peer = timed(decoder("diffusers", peer, dtype, args.vae), z)
        ratio, cpu_ratio = t_ours / t_peer, c_ours / c_peer
        print(f"diffusers {t_peer:8.2f} s wall {c_peer:8.2f} s CPU")
        print(f"max abs diff {(y_ours - y_peer).abs().max().item():.3e}")
        if dtype != torch.float32:
            ours.float()
            _, _, y_ref = timed(decoder("ours", ours, torch.float32, args.vae), z)
            print(f"max abs diff to our float32 decode: ours {(y_ours - y_ref).abs().max().item():.3e}, "
                  f"diffusers {(y_peer - y_ref).abs().max().item():.3e}")  # fmt: skip
        if mem:
            m_ours, m_peer = mem["ours"], mem["diffusers"]
            mem_ratio = m_ours["hwm_kib"] / m_peer["hwm_kib"]
            growth_ratio = (m_ours["hwm_kib"] - m_ours["base_kib"]) / (m_peer["hwm_kib"] - m_peer["base_kib"])
    # On a shared machine the wall clock follows the other load; the CPU-time ratio is steadier.
    print(f"cpu_ratio={cpu_ratio:.3f} (load average {os.getloadavg()[0]:.1f})")
    print(f"ratio={ratio:.3f} mem_ratio={mem_ratio:.3f} growth_ratio={growth_ratio:.3f}")


if __name__ == "__main__":
    main()
