"""Wan2.1 VAE decode: telefuser vs diffusers' AutoencoderKLWan, real size (dim 96), random weights.

Peak memory (first, while this process is still small): each decoder in its own fresh subprocess. The
peak is the decode high-water mark VmHWM, reset through /proc/self/clear_refs just before the decode, so
it counts the resident weights and runtime plus everything the decode allocates. (ru_maxrss is not
used: Linux carries the parent's peak at fork into the child's ru_maxrss.) Time: then both decoders in
this process on the same weights (ours first, then diffusers; a tiny warm-up decode each first), wall
clock (the ratio) and process CPU time, plus their max abs difference.

    .venv/bin/python benchmarks/wan_vae_decode.py --frames 2 --height 8 --width 8

The last line is ``ratio=<ours/peer time> mem_ratio=<ours/peer peak>``.
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

from telefuser_cli.models.wan_vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD, WanVAE  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build(which: str, dtype: torch.dtype, ours: WanVAE | None = None):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    torch.manual_seed(0)
    if which == "ours":
        return WanVAE().eval().to(dtype)
    peer = AutoencoderKLWan().eval()
    if ours is not None:
        peer.load_state_dict(convert_wan_vae_to_diffusers(dict(ours.state_dict())), strict=True)
    return peer if dtype == torch.float32 else peer.to(dtype)


def decoder(which: str, model, dtype: torch.dtype):
    """A callable on NORMALISED latents for both models (diffusers is given de-normalised ones)."""
    if which == "ours":
        return model.decode
    shape = (1, 16, 1, 1, 1)
    mean = torch.tensor(WAN21_LATENT_MEAN).view(shape)
    inv_std = 1.0 / torch.tensor(WAN21_LATENT_STD).view(shape)
    return lambda z: model.decode((z / inv_std + mean).to(dtype)).sample.float()


def latent(args) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 16, args.frames, args.height, args.width, generator=g)


def timed(fn, z) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, process CPU seconds, output) of one decode after a tiny warm-up decode."""
    with torch.inference_mode():
        fn(torch.zeros(1, 16, 2, 4, 4))  # warm-up: kernels and allocator
        start, cpu = time.perf_counter(), time.process_time()
        out = fn(z)
    return time.perf_counter() - start, time.process_time() - cpu, out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(args) -> None:
    dtype = DTYPES[args.dtype]
    model = build(args.child, dtype)
    fn, z = decoder(args.child, model, dtype), latent(args)
    with torch.inference_mode():
        fn(torch.zeros(1, 16, 2, 4, 4))
    base = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    seconds, _, _ = timed(fn, z)
    print(json.dumps({"seconds": seconds, "base_kib": base, "hwm_kib": _status_kib("VmHWM")}))


def measure_memory(args, which: str) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--frames", str(args.frames), "--height", str(args.height),
           "--width", str(args.width), "--dtype", args.dtype, "--threads", str(args.threads)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=5, help="latent frames T")
    p.add_argument("--height", type=int, default=30, help="latent height")
    p.add_argument("--width", type=int, default=52, help="latent width")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-memory", action="store_true", help="no subprocess memory runs (mem_ratio=nan)")
    p.add_argument("--child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return

    mem_ratio = float("nan")
    if not args.skip_memory:
        m_ours, m_peer = measure_memory(args, "ours"), measure_memory(args, "diffusers")
        for name, m in (("ours", m_ours), ("diffusers", m_peer)):
            print(f"{name:9s} decode peak {m['hwm_kib'] / 2**20:5.2f} GiB (of which resident before the decode "
                  f"{m['base_kib'] / 2**20:.2f} GiB), {m['seconds']:.2f} s wall in its own process")  # fmt: skip
        mem_ratio = m_ours["hwm_kib"] / m_peer["hwm_kib"]

    dtype = DTYPES[args.dtype]
    z = latent(args)
    ours = build("ours", dtype)
    peer = build("diffusers", dtype, ours=ours)
    t_ours, c_ours, y_ours = timed(decoder("ours", ours, dtype), z)
    t_peer, c_peer, y_peer = timed(decoder("diffusers", peer, dtype), z)
    print(f"latent {tuple(z.shape)} -> video {tuple(y_ours.shape)} {args.dtype}, {args.threads} threads")
    print(f"ours      {t_ours:8.2f} s wall {c_ours:8.2f} s CPU")
    print(f"diffusers {t_peer:8.2f} s wall {c_peer:8.2f} s CPU")
    # On a shared machine the wall clock follows the other load; the CPU-time ratio is steadier.
    print(f"cpu_ratio={c_ours / c_peer:.3f} (load average {os.getloadavg()[0]:.1f})")
    print(f"max abs diff {(y_ours - y_peer).abs().max().item():.3e}")
    print(f"ratio={t_ours / t_peer:.3f} mem_ratio={mem_ratio:.3f}")


if __name__ == "__main__":
    main()
