"""Memory of a Wan DiT held in bf16, fp8-resident (an fp8 file), and quantized to fp8 on load (a bf16 file).

Writes random weights of the Wan2.1 1.3B (dim 1536, ffn 8960, 12 heads, 30 layers) or 14B (dim 5120, ffn
13824, 40 heads, 40 layers) architecture once, as official-layout ``diffusion_pytorch_model.safetensors`` +
``config.json`` files: bf16, and fp8 in the lightx2v per-output-channel layout (block linears and the text
embedding as float8_e4m3fn + float32 ``weight_scale [out, 1]``; the rest bf16). Values are a random pool
repeated (the numbers do not matter here, the bytes do), streamed to disk tensor by tensor.

Variants, each in one fresh subprocess, through ``loading.wan.load_dit`` and ``WanDiT``:
- ``bf16``: the bf16 file, ``weights=auto`` (today's bf16 model);
- ``fp8``: the fp8 file, ``weights=auto`` (fp8-resident: each linear dequantized as it runs);
- ``quantize``: the bf16 file, ``weights=fp8`` (quantized per output channel at load).
Each loads the DiT on the CPU in bf16 and runs one forward on a small latent (1 frame; ``--tokens`` video
tokens, 512 text tokens). Reported: the model's resident weight bytes (parameters and buffers), the process's
peak RSS (``resource.getrusage``: includes torch itself and the memory-mapped file pages the load touched), the
load and forward times.

The 14B bf16 model does not fit this machine's memory: its 4-layer slice is measured and the 40-layer numbers
extrapolated (bytes and peak RSS: plus 36 times the per-block bytes; forward time: times 10), and printed as
such; the 14B fp8 file (40 layers) is loaded and run for real. The extrapolation is checked on fp8 (4-layer
slice extrapolated vs 40 layers measured).

    python benchmarks/memory.py --arch 1.3b        # ~4 GiB of scratch files, a few minutes on 2 cores
    python benchmarks/memory.py --arch 14b --repeats 1  # ~18 GiB of scratch files, 10-11 minutes
The last line is ``ratio=<fp8 peak RSS / bf16 peak RSS> time_ratio=<fp8 forward / bf16 forward>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIT_FILE = "diffusion_pytorch_model.safetensors"
ARCHS = {
    "1.3b": {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30},
    "14b": {"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40},
}
SLICE = 4  # layers of the 14B slice measured in bf16
POOL = 1 << 24  # elements of the random value pool
_ST_DTYPES = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3"}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def dit_config(arch: str, layers: int):
    from telefuser_cli.models.wan_dit import WanDiTConfig

    spec = dict(ARCHS[arch], num_layers=layers)
    return WanDiTConfig(model_type="t2v", in_dim=16, out_dim=16, text_dim=4096, freq_dim=256, **spec)


def _layout(config, fp8: bool) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(key, dtype, shape) of every tensor of the file, in order."""
    from telefuser_cli.loading.quantize import resident_layers
    from telefuser_cli.models.wan_dit import WanDiT

    with torch.device("meta"):
        model = WanDiT(config)
    linears = {f"{name}.weight" for name in resident_layers(model, WanDiT.keep_fp32)} if fp8 else set()
    out = []
    for key, tensor in model.state_dict().items():
        if key in linears:
            out.append((key, torch.float8_e4m3fn, tuple(tensor.shape)))
            out.append((key.removesuffix(".weight") + ".weight_scale", torch.float32, (tensor.shape[0], 1)))
        else:
            out.append((key, torch.bfloat16, tuple(tensor.shape)))
    return out


def write_checkpoint(directory: Path, config, fp8: bool) -> int:
    """Stream a safetensors file of the layout to disk (never all tensors in memory); returns its bytes."""
    from telefuser_cli.families.wan.tiny import dit_config_json

    directory.mkdir(parents=True, exist_ok=True)
    layout = _layout(config, fp8)
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(POOL, generator=g) * 0.02
    pools = {
        torch.bfloat16: pool.to(torch.bfloat16).view(torch.uint8).numpy().tobytes(),
        torch.float8_e4m3fn: (pool / pool.abs().max() * 448)
        .to(torch.float8_e4m3fn)
        .view(torch.uint8)
        .numpy()
        .tobytes(),
        torch.float32: (torch.full((POOL,), 0.02 * 5 / 448)).view(torch.uint8).numpy().tobytes(),
    }
    header, offset = {}, 0
    for key, dtype, shape in layout:
        size = dtype.itemsize * max(1, int(torch.Size(shape).numel()))
        header[key] = {
            "dtype": _ST_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = directory / DIT_FILE
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for key, dtype, _ in layout:
            start, end = header[key]["data_offsets"]
            left, source = end - start, pools[dtype]
            while left:
                chunk = source[: min(left, len(source))]
                f.write(chunk)
                left -= len(chunk)
    (directory / "config.json").write_text(json.dumps(dit_config_json(config), indent=2) + "\n")
    return path.stat().st_size


def child(variant: str, root: Path, tokens: int, threads: int, repeats: int) -> None:
    """One load and one forward in this (fresh) process; prints a JSON line with the numbers."""
    torch.set_num_threads(threads)
    from telefuser_cli.loading.wan import load_dit, locate
    from telefuser_cli.ops.fp8_linear import weights_summary

    base = rss_bytes()
    start = time.perf_counter()
    model = load_dit(
        locate(root, "dit", DIT_FILE), dtype=torch.bfloat16, device=torch.device("cpu"),
        attn_backend="TORCH_SDPA", expected_task="t2v", model_name="bench",
        expected_quant="fp8" if variant == "fp8" else "bf16", weights="fp8" if variant == "quantize" else "auto",
    )  # fmt: skip
    load_s = time.perf_counter() - start
    summary = weights_summary(model)
    side = int(round((tokens * 4) ** 0.5))  # latent side: tokens = (side / 2)^2 with the 2x2 patch
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 1, side, side, generator=g)
    context = torch.randn(1, 512, 4096, generator=g).to(torch.bfloat16)
    times = []
    with torch.no_grad():
        for _ in range(repeats):  # the first one also faults in the memory-mapped weights
            start = time.perf_counter()
            out = model(x, torch.tensor([500.0]), context)
            times.append(time.perf_counter() - start)
    assert torch.isfinite(out).all(), "non-finite output"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({
        "variant": variant, "load_s": load_s, "forward_s": min(times), "first_forward_s": times[0],
        "rss_before": base, "peak_rss": peak,
        "weight_bytes": summary["fp8_bytes"] + summary["other_bytes"], "fp8_bytes": summary["fp8_bytes"],
        "fp8_layers": summary["fp8_layers"], "tokens": (side // 2) ** 2,
    }))  # fmt: skip


def run_child(variant: str, root: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--child", variant, "--root", str(root), "--tokens", str(args.tokens),
           "--threads", str(args.threads), "--repeats", str(args.repeats)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{variant} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _row(name: str, r: dict, note: str = "") -> None:
    print(
        f"{name:<24} weights {_gib(r['weight_bytes']):>10} (fp8 {_gib(r['fp8_bytes'])}, {r['fp8_layers']} fp8 "
        f"layers)  peak RSS {_gib(r['peak_rss']):>10} (before load {_gib(r['rss_before'])})  load "
        f"{r['load_s']:5.1f} s  forward {r['forward_s']:6.2f} s (first {r['first_forward_s']:6.2f} s)"
        f"{note}"
    )


def _extrapolate(r: dict, block: dict, layers: int, full: int) -> dict:
    """A ``layers``-layer slice's numbers scaled to ``full`` layers: bytes and peak RSS plus the missing blocks'
    bytes (``block``: one block's ``weight_bytes``, ``fp8_bytes``, ``fp8_layers``), forward time in proportion
    (the blocks dominate it)."""
    more = full - layers
    return dict(
        r, weight_bytes=r["weight_bytes"] + more * block["weight_bytes"],
        peak_rss=r["peak_rss"] + more * block["weight_bytes"], forward_s=r["forward_s"] * full / layers,
        first_forward_s=r["first_forward_s"] * full / layers, fp8_bytes=r["fp8_bytes"] + more * block["fp8_bytes"],
        fp8_layers=r["fp8_layers"] + more * block["fp8_layers"],
    )  # fmt: skip


def _block(arch: str, fp8: bool) -> dict:
    """One block's bytes as loaded: bf16 everywhere, or fp8 linears (+ float32 scale per row) and bf16 biases;
    the ``keep_fp32`` tensors (modulation, norms) in float32 either way."""
    from telefuser_cli.loading.quantize import resident_layers
    from telefuser_cli.models.wan_dit import Block, WanDiT

    with torch.device("meta"):
        block = Block(dit_config(arch, 1))
    linears = resident_layers(block, ()) if fp8 else {}
    fp8_bytes = sum(m.weight.numel() + 4 * m.out_features for m in linears.values())
    total = fp8_bytes
    for name, p in block.named_parameters():
        if name.removesuffix(".weight") in linears:
            continue
        total += p.numel() * (4 if any(k in name for k in WanDiT.keep_fp32) else 2)
    return {"weight_bytes": total, "fp8_bytes": fp8_bytes, "fp8_layers": len(linears)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="1.3b")
    ap.add_argument("--tokens", type=int, default=256, help="video tokens of the forward (a square latent)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="forwards per process; the fastest is reported")
    ap.add_argument("--dir", type=Path, help="write the scratch files here instead of a temporary directory")
    ap.add_argument("--child", choices=("bf16", "fp8", "quantize"), help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.root, args.tokens, args.threads, args.repeats)
        return

    full = ARCHS[args.arch]["num_layers"]
    slice_layers = full if args.arch == "1.3b" else SLICE
    print(f"Wan {args.arch} architecture, {full} layers, one forward at {args.tokens} video tokens + 512 text "
          f"tokens, bf16 compute, {args.threads} threads, CPU (torch {torch.__version__})")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="memory_", dir=args.dir) as tmp:
        tmp = Path(tmp)
        files = {"bf16": (tmp / "bf16", slice_layers, False), "fp8": (tmp / "fp8", slice_layers, True)}
        if slice_layers != full:
            files["fp8_full"] = (tmp / "fp8_full", full, True)
        for name, (directory, layers, fp8) in files.items():
            start = time.perf_counter()
            size = write_checkpoint(directory, dit_config(args.arch, layers), fp8)
            print(f"wrote {name} file: {layers} layers, {_gib(size)} in {time.perf_counter() - start:.1f} s")
        results = {
            "bf16": run_child("bf16", files["bf16"][0], args),
            "fp8": run_child("fp8", files["fp8"][0], args),
            "quantize": run_child("quantize", files["bf16"][0], args),
        }
        if slice_layers != full:
            results["fp8_full"] = run_child("fp8", files["fp8_full"][0], args)
    if slice_layers == full:
        for name, r in results.items():
            _row(name, r)
        bf16, fp8 = results["bf16"], results["fp8"]
    else:
        for name in ("bf16", "fp8", "quantize"):
            _row(f"{name} ({SLICE}-layer slice)", results[name], "  measured")
        bf16 = _extrapolate(results["bf16"], _block(args.arch, False), SLICE, full)
        check = _extrapolate(results["fp8"], _block(args.arch, True), SLICE, full)
        fp8 = results["fp8_full"]
        _row(f"bf16 ({full} layers)", bf16, "  EXTRAPOLATED from the slice (does not fit in memory here)")
        _row(f"fp8 ({full} layers)", check, "  extrapolated from the slice (check of the method)")
        _row(f"fp8 ({full} layers)", fp8, "  measured")
    bytes_ratio = fp8["weight_bytes"] / bf16["weight_bytes"]
    ratio = fp8["peak_rss"] / bf16["peak_rss"]
    time_ratio = fp8["forward_s"] / bf16["forward_s"]
    print(f"resident weight bytes fp8/bf16: {bytes_ratio:.3f}")
    print(f"ratio={ratio:.3f} time_ratio={time_ratio:.3f}")


if __name__ == "__main__":
    main()
