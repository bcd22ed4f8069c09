"""Load time of a Wan DiT checkpoint, disk to ready model: telefuser's loader vs diffusers' from_single_file.

Writes random bf16 weights of the Wan2.1 T2V 1.3B architecture (dim 1536, ffn 8960, 12 heads, 30 layers,
text_dim 4096, freq_dim 256; ``--layers`` shortens it) as an official-layout ``diffusion_pytorch_model.safetensors``
with the official ``config.json`` (~2.8 GB at 30 layers) into a temporary directory, plus the matching
diffusers ``config.json`` in a subfolder (``from_single_file(..., config=<local folder>)`` reads it there;
with ``HF_HUB_OFFLINE=1`` nothing is fetched).

- ours: ``loading.wan.locate`` + ``loading.wan.load_dit`` (bf16, CPU, TORCH_SDPA);
- diffusers: ``WanTransformer3DModel.from_single_file(path, config=<folder>, torch_dtype=torch.bfloat16)``
  as installed (without ``accelerate``, diffusers defaults to ``low_cpu_mem_usage=False``: it builds the
  model with random init, then loads the converted state dict into it).

Each load runs in a fresh subprocess, sides alternating, ``--repeats`` times; before each one the page cache
is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``, needs root) so every load reads from disk. Where
that is not permitted, the file is read once first and all loads are warm-cache loads (the output says which).
Time: the load call only (imports excluded, printed apart), best of the repeats.
Memory: the child's peak RSS (ru_maxrss) growth over its RSS right before the load call, best run's value.

    python benchmarks/load_time.py --layers 4
The last line is ``ratio=<ours/peer time> mem_ratio=<ours/peer peak>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIT_FILE = "diffusion_pytorch_model.safetensors"
PEER_CONFIG_DIR = "diffusers_config"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_checkpoint(root: Path, layers: int) -> int:
    """Random bf16 weights in the official layout, official and diffusers config.json; returns file bytes."""
    from safetensors.torch import save_file

    from telefuser_cli.families.wan.tiny import dit_config_json as _dit_config_json
    from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig

    cfg = WanDiTConfig(
        model_type="t2v",
        dim=1536,
        ffn_dim=8960,
        num_heads=12,
        num_layers=layers,
        text_dim=4096,
        freq_dim=256,
        in_dim=16,
        out_dim=16,
    )
    with torch.device("meta"):
        model = WanDiT(cfg)
    g = torch.Generator().manual_seed(0)
    tensors = {
        k: torch.randn(v.shape, generator=g, dtype=torch.bfloat16) * 0.02
        for k, v in model.state_dict().items()
    }
    save_file(tensors, str(root / DIT_FILE))
    (root / "config.json").write_text(json.dumps(_dit_config_json(cfg), indent=2) + "\n")
    peer = root / PEER_CONFIG_DIR
    peer.mkdir()
    peer_config = {
        "_class_name": "WanTransformer3DModel",
        "patch_size": list(cfg.patch_size),
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "in_channels": cfg.in_dim,
        "out_channels": cfg.out_dim,
        "text_dim": cfg.text_dim,
        "freq_dim": cfg.freq_dim,
        "ffn_dim": cfg.ffn_dim,
        "num_layers": cfg.num_layers,
        "cross_attn_norm": cfg.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads",
        "eps": cfg.eps,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    }
    (peer / "config.json").write_text(json.dumps(peer_config, indent=2) + "\n")
    return (root / DIT_FILE).stat().st_size


def child(side: str, root: Path, threads: int) -> None:
    """One load in this (fresh) process; prints a JSON line with the numbers."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    if side == "telefuser":
        from telefuser_cli.loading.wan import load_dit, locate
    else:
        from diffusers import WanTransformer3DModel
    imported = time.perf_counter() - start
    base = rss_bytes()
    start = time.perf_counter()
    if side == "telefuser":
        files = locate(root, "dit", "diffusion_pytorch_model*.safetensors")
        model = load_dit(
            files,
            dtype=torch.bfloat16,
            device=torch.device("cpu"),
            attn_backend="TORCH_SDPA",
            expected_task="t2v",
            model_name="bench",
        )
    else:
        model = WanTransformer3DModel.from_single_file(
            str(root / DIT_FILE), config=str(root / PEER_CONFIG_DIR), torch_dtype=torch.bfloat16
        )
    model.eval()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    params = list(model.parameters())
    assert not any(p.is_meta for p in params), "parameters left on the meta device"
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
    print(
        json.dumps(
            {
                "load_s": elapsed,
                "import_s": imported,
                "rss_before": base,
                "peak_rss": peak,
                "params": sum(p.numel() for p in params),
                "dtypes": dtypes,
            }
        )
    )


def drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_child(side: str, root: Path, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--child", side, "--root", str(root), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{side} load failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache (warm-cache loads)")
    ap.add_argument("--dir", type=Path, help="write the checkpoint here instead of a temporary directory")
    ap.add_argument("--child", choices=("telefuser", "diffusers"), help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.root, args.threads)
        return

    with tempfile.TemporaryDirectory(prefix="load_time_", dir=args.dir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        size = write_checkpoint(root, args.layers)
        print(
            f"Wan2.1 1.3B arch, {args.layers} layers, bf16 safetensors {size / 2**30:.2f} GiB "
            f"(written in {time.perf_counter() - start:.1f} s), {args.threads} threads, CPU"
        )
        cold = not args.warm and drop_page_cache()
        if not cold:
            with open(root / DIT_FILE, "rb") as f:  # warm the page cache for both sides alike
                while f.read(1 << 24):
                    pass
        how = (
            "page cache dropped before each load"
            if cold
            else "warm page cache (could not or asked not to drop it)"
        )
        print(f"cache: {how}; best of {args.repeats}, one fresh process per load")
        runs: dict[str, list[dict]] = {"telefuser": [], "diffusers": []}
        for _ in range(args.repeats):
            for side in runs:
                if cold:
                    drop_page_cache()
                result = run_child(side, root, args.threads)
                runs[side].append(result)
                print(
                    f"  {side:10s} load {result['load_s']:7.3f} s  import {result['import_s']:5.2f} s  "
                    f"peak RSS {result['peak_rss'] / 2**30:5.2f} GiB (+{(result['peak_rss'] - result['rss_before']) / 2**30:.2f})",
                    flush=True,
                )
    best = {side: min(v, key=lambda r: r["load_s"]) for side, v in runs.items()}
    growth = {side: r["peak_rss"] - r["rss_before"] for side, r in best.items()}
    for side, r in best.items():
        print(
            f"{side:10s} {r['load_s']:8.3f} s wall  ({r['params'] / 1e6:.0f} M params, {'/'.join(r['dtypes'])})"
        )
    for side, r in best.items():
        print(
            f"{side:10s} load peak {growth[side] / 2**30:6.2f} GiB  (RSS growth during the load; "
            f"process peak {r['peak_rss'] / 2**30:.2f} GiB)"
        )
    ratio = best["telefuser"]["load_s"] / best["diffusers"]["load_s"]
    print(f"ratio={ratio:.3f} mem_ratio={growth['telefuser'] / max(growth['diffusers'], 1):.3f}")


if __name__ == "__main__":
    main()
