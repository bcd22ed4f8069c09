"""Run the quick benchmarks against diffusers and write benchmarks/RESULTS.md (what ``make bench`` calls).

Each benchmark is one of this folder's scripts, run in a subprocess at a quick size; the scripts build both
models on the same random weights in one process and print both numbers. Times: the best of the runs (the
DiT script also takes the best of its own repeats), as the machine may be shared. Memory: as each script
measures it (see their docstrings).

    .venv/bin/python benchmarks/run_all.py                  # about 6-9 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --compile        # adds a regional torch.compile comparison
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUICK_LOAD = ["--layers", "4", "--repeats", "3"]
QUICK_DIT = ["--layers", "2", "--frames", "9", "--height", "128", "--width", "128", "--repeats", "3"]


@dataclass
class Bench:
    name: str
    args: list[str]
    runs: int  # subprocess runs; the best time of each side is kept

    @property
    def command(self) -> list[str]:
        return [sys.executable, *self.args]


def benches(compile_: bool) -> list[Bench]:
    dit = str(HERE / "wan_dit_step.py")
    vae = str(HERE / "wan_vae_decode.py")
    load = str(HERE / "load_time.py")
    cli = str(HERE / "cli_time.py")
    found = [
        Bench("DiT forward (1 step), bf16", [dit, *QUICK_DIT], 1),
        Bench(
            "DiT step as the pipeline runs it (context prepared once), bf16",
            [dit, *QUICK_DIT, "--prepared"],
            1,
        ),
        Bench(
            "DiT guided step as the pipeline runs it, CFG batched (ours) vs 2 forwards",
            [dit, *QUICK_DIT, "--cfg", "batched", "--prepared"],
            1,
        ),
        Bench(
            "DiT guided step as the pipeline runs it, CFG two-pass (ours) vs 2 forwards",
            [dit, *QUICK_DIT, "--cfg", "two-pass", "--prepared"],
            1,
        ),
        Bench("VAE decode, fp32", [vae, "--frames", "2", "--height", "16", "--width", "16"], 2),
        Bench(
            "VAE decode, bf16",
            [vae, "--frames", "2", "--height", "16", "--width", "16", "--dtype", "bf16"],
            2,
        ),
        Bench("DiT checkpoint load, disk to model (from_single_file)", [load, *QUICK_LOAD], 1),
        Bench("CLI end to end: generate recipe=tiny (ours only)", [cli, "--what", "generate"], 1),
        Bench("CLI start-up: telefuser --help vs python -c pass", [cli, "--what", "help"], 1),
    ]
    if compile_:
        found.append(Bench("DiT forward, regional torch.compile both", [dit, *QUICK_DIT, "--compile"], 1))
    return found


def parse(output: str) -> dict[str, float | str]:
    """Times (s) and peak memory (MiB) of both sides from a script's output."""
    values: dict[str, float | str] = {}
    sides = (("telefuser", "ours"), ("ours", "ours"), ("diffusers", "peer"), ("baseline", "peer"))
    for side, key in sides:
        # wan_dit_step: "telefuser    1.234 s   peak RSS +  12.3 MiB   peak tensors +  4.5 MiB"
        pattern = rf"^{side}\s+([\d.]+) s\s+peak (RSS|CUDA allocated) \+\s*([\d.]+) MiB\s+peak tensors \+\s*([\d.]+)"
        m = re.search(pattern, output, re.M)
        if m:
            values[f"{key}_s"] = float(m[1])
            tensors = f"tensors +{float(m[4]):.1f} MiB, " if float(m[4]) > 0 else ""
            values[f"{key}_mem"] = f"{tensors}{m[2]} +{float(m[3]):.1f} MiB"
        # wan_vae_decode, load_time, cli_time: "ours      1.23 s wall  1.20 s CPU";
        # wan_vae_decode, load_time: "ours decode peak 1.23 GiB (..." / "telefuser load peak 1.23 GiB (..."
        m = re.search(rf"^{side}\s+([\d.]+) s wall", output, re.M)
        if m:
            values[f"{key}_s"] = float(m[1])
        m = re.search(
            rf"^{side}\s+(?:decode|load) peak\s+([\d.]+) GiB(?:.*growth ([\d.]+) GiB)?", output, re.M
        )
        if m:
            growth = f" (growth {float(m[2]):.2f} GiB)" if m[2] else ""
            values[f"{key}_mem"] = f"{float(m[1]):.2f} GiB{growth}"
    m = re.search(r"ratio=([\d.naninf]+) mem_ratio=([\d.naninf]+)(?: growth_ratio=([\d.naninf]+))?", output)
    if m and m[2] != "nan":
        values["mem_ratio"] = m[2] + (f" (growth {m[3]})" if m[3] and m[3] != "nan" else "")
    return values


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = re.search(r"^Model name:\s+(.+)$", lscpu, re.M)
        cpu = model[1].strip() if model else platform.processor()
    except (OSError, subprocess.CalledProcessError):
        cpu = platform.processor()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu}, {os.cpu_count()} CPU cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"diffusers {_version('diffusers')}"
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def run(bench: Bench, timeout: float) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    best: dict = {}
    logs = []
    for _ in range(bench.runs):
        done = subprocess.run(
            bench.command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False
        )
        logs.append(done.stdout + (f"\n[stderr tail]\n{done.stderr[-2000:]}" if done.returncode else ""))
        if done.returncode:
            return {"error": f"exit {done.returncode}"}, "\n".join(logs)
        values = parse(done.stdout)
        for key in ("ours_s", "peer_s"):
            if key in values and (key not in best or values[key] < best[key]):
                best[key] = values[key]
        best.update({k: v for k, v in values.items() if k not in ("ours_s", "peer_s")})
    if "ours_s" in best and "peer_s" in best:
        best["ratio"] = f"{best['ours_s'] / best['peer_s']:.3f}"
    return best, "\n".join(logs)


def display(args: list[str]) -> str:
    return shlex.join([".venv/bin/python", *(str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a
                                             for a in args)])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true", help="also compare regional torch.compile")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per benchmark run")
    ap.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args()

    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()[0]
    rows, logs = [], []
    for bench in benches(args.compile):
        print(f"running: {bench.name}", flush=True)
        values, log = run(bench, args.timeout)
        rows.append((bench, values))
        logs.append((bench, log))
        print(f"  {values}", flush=True)

    def cell(values: dict, key: str, fmt: str = "{}") -> str:
        return fmt.format(values[key]) if key in values else "-"

    lines = [
        "# Benchmark results (telefuser vs diffusers, same random weights, same process)",
        "",
        f"Written by `{display([sys.argv[0], *sys.argv[1:]])}` on {started:%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {machine()}. Load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: "
        "the machine may be shared with other work, so times are the best of a few repeats and the "
        "ratio (ours / diffusers, lower is better for us) is the number to read.",
        "",
        "| benchmark | telefuser s | diffusers s | ratio | telefuser peak | diffusers peak | mem ratio | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bench, values in rows:
        if "error" in values:
            lines.append(f"| {bench.name} | failed: {values['error']} | | | | | | `{display(bench.args)}` |")
            continue
        lines.append(
            f"| {bench.name} | {cell(values, 'ours_s', '{:.3f}')} | {cell(values, 'peer_s', '{:.3f}')} | "
            f"{cell(values, 'ratio')} | {cell(values, 'ours_mem')} | {cell(values, 'peer_mem')} | "
            f"{cell(values, 'mem_ratio')} | `{display(bench.args)}` |"
        )
    lines += ["", "Peak memory: see each script's docstring. DiT: growth during the forward, as the exact peak of",
              "tensor allocations (on CPU; the mem ratio uses it) and as sampled RSS (noisy); with --compile RSS",
              "only. VAE: the decode's high-water mark in its own process (growth: over the resident set just",
              "before the decode). Load: peak RSS growth during the load, each load in a fresh process. CLI",
              "rows: wall time of whole processes; the start-up row's peer is `python -c pass`, not diffusers;",
              "the generate row has no peer.",
              "", "## Raw output", ""]  # fmt: skip
    for bench, log in logs:
        lines += [f"### {bench.name}", "", f"`{display(bench.args)}`", "", "```", log.strip(), "```", ""]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
