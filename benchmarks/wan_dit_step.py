"""One Wan DiT forward (a denoising step), telefuser vs diffusers' WanTransformer3DModel, same weights.

Architecture: Wan2.1 T2V 1.3B (dim 1536, ffn 8960, 12 heads, 30 layers, text_dim 4096, freq_dim 256) with
random weights; ``--layers`` shortens it for a quick run. Both models run in this process on the same inputs.
Each model's parameters are cast the way its own loader would: ours keeps ``WanDiT.keep_fp32`` in float32,
diffusers keeps its ``_keep_in_fp32_modules``.

Time: best of ``--repeats`` forwards after one warm-up, models alternating.

``--prepared`` times ours as the pipeline runs a step: the context prepared once before the timed calls
(``WanDiT.prepare_context``: text embedding and every block's cross-attention keys and values, once per run in
``pipelines.sampling.sample``), against diffusers' forward, which recomputes them at every step.

Throughput: the FLOPs of a forward, counted analytically (multiply-add = 2 FLOPs; linear layers, the patch
embedding as the linear it is, and the two attention matmuls; norms, activations and softmax left out):

    B * [ 2 L C p (in + out)                          patch embedding, head   (p = prod(patch_size))
          + 2 T C (D_text + C)                        text embedding          (T = text_len = 512)
          + layers * ( 8 L C^2 + 4 L^2 C              self-attention: q k v o, QK^T and PV
                       + 4 L C^2 + 4 L T C            cross-attention: q o, QK^T and PV
                       + 4 T C^2                      cross-attention: k v of the context
                       + 4 L C F ) ]                  feed-forward (F = ffn_dim)

with L video tokens, C = dim (time embedding: < 0.01%, left out). A prepared context drops the text
embedding and the context's k v terms. Achieved GFLOP/s = FLOPs of the work each side did / its time, printed
beside the machine's bf16 (or fp32) matmul ceiling, measured here as the best of several 2048^3 matmuls.
Peak memory, weights excluded (they exist before each baseline):
- on CUDA: torch.cuda.max_memory_allocated growth during a forward (``mem_ratio`` uses it);
- on CPU, two measures: (a) peak RSS growth during a forward, median over the repeats (a thread samples
  /proc/self/statm every 1 ms; baseline right before the forward after gc + malloc_trim): real but noisy,
  +-10% between runs; (b) peak bytes of tensors allocated by the forward's ops, tracked exactly by a
  TorchDispatchMode in one extra untimed forward (misses kernel-internal scratch). ``mem_ratio`` uses (b).

    python benchmarks/wan_dit_step.py --layers 2
    python benchmarks/wan_dit_step.py --layers 2 --prepared
The last line is ``ratio=<ours/peer time> mem_ratio=<ours/peer peak>``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import statistics
import threading
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from telefuser_cli.families.base import Step
from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig
from telefuser_cli.pipelines.sampling import Batched, TwoPass
from telefuser_cli.runtime.compile import compile_blocks


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: baselines just include retained memory
        pass


def measure(fn, device: torch.device) -> tuple[float, int]:
    """Run fn once; return (seconds, peak memory growth in bytes)."""
    release_freed_memory()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() - base
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    return elapsed, max(peak[0], rss_bytes()) - base


class TensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages created by ops while active; storages alive before (weights, inputs)
    are not counted. Deterministic, unlike RSS; it misses scratch memory that kernels allocate and free
    internally (e.g. SDPA's per-thread buffers), which both models share."""

    def __init__(self, existing: set[int]):
        super().__init__()
        self.existing = existing
        self.live: set[int] = set()
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or ptr in self.existing or ptr in self.live:
                continue
            self.live.add(ptr)
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, ptr, nbytes)
        return out

    def _free(self, ptr: int, nbytes: int) -> None:
        self.live.discard(ptr)
        self.current -= nbytes


def tensor_peak(fn, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    existing = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers(), *inputs)}
    with TensorPeak(existing) as mode:
        fn()
    return mode.peak


def forward_flops(cfg: WanDiTConfig, tokens: int, batch: int, prepared: bool) -> float:
    """FLOPs of one forward, by the formula of the module docstring."""
    c, t, n = cfg.dim, cfg.text_len, tokens
    per_layer = 8 * n * c * c + 4 * n * n * c + 4 * n * c * c + 4 * n * t * c + 4 * n * c * cfg.ffn_dim
    total = 2 * n * c * math.prod(cfg.patch_size) * (cfg.in_dim + cfg.out_dim) + cfg.num_layers * per_layer
    if not prepared:
        total += 2 * t * c * (cfg.text_dim + c) + cfg.num_layers * 4 * t * c * c
    return float(batch * total)


def matmul_ceiling(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` [size, size] x [size, size] matmuls in ``dtype`` (after a warm-up)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(device, dtype) for _ in range(2))
    best = math.inf
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def build_models(cfg: WanDiTConfig, dtype: torch.dtype, device: torch.device):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    torch.manual_seed(0)
    ours = WanDiT(cfg).eval()
    torch.nn.init.normal_(ours.head.head.weight, std=0.02)  # nothing zero-initialised
    peer = WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=cfg.cross_attn_norm,
        eps=cfg.eps,
    ).eval()
    keep_peer = WanTransformer3DModel._keep_in_fp32_modules
    converted = convert_wan_transformer_to_diffusers(dict(ours.state_dict()))
    converted = {
        k: v if any(m in k.split(".") for m in keep_peer) else v.to(dtype) for k, v in converted.items()
    }
    peer.load_state_dict(converted, strict=True, assign=True)
    for name, p in ours.named_parameters():
        if not any(s in name for s in WanDiT.keep_fp32):
            p.data = p.data.to(dtype)
    return ours.to(device), peer.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--frames", type=int, default=17, help="video frames (latent frames = (n-1)/4+1)")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=416)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--cfg",
        choices=("none", "batched", "two-pass"),
        default="none",
        help="time a guided step (scale 5, a second context) instead of one forward: ours with "
        "Batched or TwoPass guidance (pipelines.sampling), diffusers with two forwards as WanPipeline does",
    )
    ap.add_argument(
        "--prepared",
        action="store_true",
        help="ours as the pipeline runs a step: the context(s) prepared once before timing (prepare_context)",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="regional torch.compile: ours runtime.compile.compile_blocks, diffusers compile_repeated_blocks; "
        "the first call (compilation) is timed apart; peak memory is then RSS only",
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    cfg = WanDiTConfig(
        model_type="t2v",
        dim=1536,
        ffn_dim=8960,
        num_heads=12,
        num_layers=args.layers,
        text_dim=4096,
        freq_dim=256,
        in_dim=16,
        out_dim=16,
    )
    ours, peer = build_models(cfg, dtype, device)

    g = torch.Generator().manual_seed(1)
    lat = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    x = torch.randn(1, 16, *lat, generator=g).to(device)
    t = torch.tensor([500.0], device=device)
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(device)
    tokens = lat[0] * (lat[1] // 2) * (lat[2] // 2)
    print(
        f"Wan2.1 1.3B arch, {args.layers} layers, {args.dtype}, {device}, {args.threads} threads: "
        f"latent {lat}, {tokens} video tokens, {cfg.text_len} text tokens"
    )

    context_null = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(device)
    ceiling = matmul_ceiling(dtype, device)
    print(f"{args.dtype} matmul ceiling (best 2048^3 matmul): {ceiling:.1f} GFLOP/s")
    passes = 1 if args.cfg == "none" else 2
    flops = {
        "telefuser": passes * forward_flops(cfg, tokens, 1, args.prepared),
        "diffusers": passes * forward_flops(cfg, tokens, 1, False),
    }
    ours_context, ours_context_null = context, context_null
    prepared: list[torch.Tensor] = []  # the cache tensors exist before a step, like the weights
    if args.prepared:
        with torch.inference_mode():
            ours_context, ours_context_null = (
                ours.prepare_context(context),
                ours.prepare_context(context_null),
            )
        for cache in (ours_context, ours_context_null):
            prepared += [cache.context, *(tensor for kv in cache.kv for tensor in (kv.k, kv.v))]
        cache_bytes = sum(t.nbytes for kv in ours_context.kv for t in (kv.k, kv.v))
        print(
            f"telefuser: context prepared once (as pipelines.sampling.sample does), "
            f"{cache_bytes / 2**20:.1f} MiB of keys and values per prompt"
        )

    def peer_forward(ctx: torch.Tensor) -> torch.Tensor:
        return peer(x.to(dtype), t, ctx.to(dtype), return_dict=False)[0].float()

    if args.cfg == "none":
        runs = {
            "telefuser": (ours, lambda: ours(x, t, ours_context)),
            "diffusers": (peer, lambda: peer_forward(context)),
        }
    else:
        guidance = Batched() if args.cfg == "batched" else TwoPass()
        # the contexts are given as they are (prepared above or raw): the denoiser only runs the DiT
        denoiser = WanDenoiser(ours, 5.0, args.prepared, None, device)
        step = Step(0, t[0], t[0] * 0, 500.0)

        def peer_guided() -> torch.Tensor:
            cond, uncond = peer_forward(context), peer_forward(context_null)
            return uncond + 5.0 * (cond - uncond)

        runs = {
            "telefuser": (ours, lambda: guidance(denoiser, x, step, ours_context, ours_context_null)),
            "diffusers": (peer, peer_guided),
        }
        print(f"guided step (CFG 5): telefuser {guidance.name} guidance, diffusers two forwards")
    if args.compile:
        compile_blocks(ours)
        peer.compile_repeated_blocks()
        with torch.inference_mode():
            for name, (_, fn) in runs.items():
                start = time.perf_counter()
                fn()
                print(f"{name:10s} first call (compilation) {time.perf_counter() - start:8.1f} s")
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in runs}
    with torch.inference_mode():
        # the output comparison doubles as the warm-up
        diff = (runs["telefuser"][1]() - runs["diffusers"][1]().float()).abs().max().item()
        for _ in range(args.repeats):
            for name, (_, fn) in runs.items():
                samples[name].append(measure(fn, device))
        tensor_peaks = {
            name: 0 if args.compile else tensor_peak(fn, m, (x, t, context, context_null, *prepared))
            for name, (m, fn) in runs.items()
        }
    # time: best run (least disturbed by other load); RSS: median run (sampling is noisy)
    result = {name: (min(s for s, _ in v), statistics.median(m for _, m in v)) for name, v in samples.items()}
    mem_kind = "CUDA allocated" if device.type == "cuda" else "RSS"
    for name, (sec, mem) in result.items():
        print(
            f"{name:10s} {sec:8.3f} s   peak {mem_kind} +{mem / 2**20:8.1f} MiB   "
            f"peak tensors +{tensor_peaks[name] / 2**20:8.1f} MiB   "
            f"{flops[name] / 1e9:8.1f} GFLOP  {flops[name] / sec / 1e9:6.1f} GFLOP/s "
            f"({flops[name] / sec / 1e9 / ceiling:.0%} of the matmul ceiling)"
        )
    print(f"max abs difference of outputs: {diff:.3e}")
    t_ratio = result["telefuser"][0] / result["diffusers"][0]
    if device.type == "cuda" or args.compile:
        m_ours, m_peer = result["telefuser"][1], result["diffusers"][1]
    else:  # the deterministic measure; the RSS ratio is printed above for comparison
        m_ours, m_peer = tensor_peaks["telefuser"], tensor_peaks["diffusers"]
    print(f"ratio={t_ratio:.3f} mem_ratio={m_ours / max(m_peer, 1):.3f}")


if __name__ == "__main__":
    main()
