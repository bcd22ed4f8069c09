"""What a seed sweep costs: one ``telefuser generate -m`` process against separate CLI runs, and each extra
job against its own generation work.

In one run, in a temporary working directory (fresh processes, everything included):

- ``sweep``: ``telefuser generate -m recipe=tiny prompt=... seed=1,...,N`` (N = ``--jobs``, default 8);
- ``separate``: the same N jobs as N separate ``telefuser generate`` processes;
- ``extra job``: the wall time of each job after the first inside the sweep, from the end of the job before
  it to its own end (the moments their ``config.json`` was written for the last time): Hydra's job set-up,
  the records, the generation, and anything loaded or encoded again;
- ``generation``: that job's own denoise + decode + video write, from its ``config.json`` timings.

Prints ``ratio=`` (sweep / separate) and ``marginal=`` (the median over jobs 2..N of extra job / its
generation: 1.0 would mean nothing but generation). The validation of every job before the first starts
is part of the sweep's time but of no job's. ``--keep-loaded false`` measures the sweep without kept
components.

    python benchmarks/sweep.py
    python benchmarks/sweep.py --jobs 4 --keep-loaded false
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TELEFUSER = str(Path(sys.executable).parent / "telefuser")
BASE = ["generate", "recipe=tiny", "prompt=a red ball moving right"]
GENERATION = ("denoise", "decode", "write video.mp4")


def wall(args: list[str], cwd: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([TELEFUSER, *args], capture_output=True, text=True, cwd=cwd, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"telefuser {' '.join(args[:3])} ... failed (exit {done.returncode})")
    return elapsed


def job_records(sweep_dir: Path) -> list[tuple[float, dict]]:
    """(time its config.json was last written, its content) of each job, in job order (job folders start
    with the job's index)."""
    files = sorted(p / "config.json" for p in sweep_dir.iterdir() if (p / "config.json").is_file())
    return [(path.stat().st_mtime, json.loads(path.read_text(encoding="utf-8"))) for path in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--keep-loaded", choices=("true", "false"), default="true")
    args = ap.parse_args()
    n = args.jobs
    keep = f"pipeline.keep_loaded={args.keep_loaded}"
    seeds = ",".join(str(seed) for seed in range(1, n + 1))
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as cwd:
        wall([*BASE, "seed=1", f"hydra.run.dir={cwd}/warm"], cwd)  # the tiny model exists before timing
        sweep = wall([BASE[0], "-m", *BASE[1:], keep, f"seed={seeds}", f"hydra.sweep.dir={cwd}/sweep"], cwd)
        separate = [
            wall([*BASE, f"seed={seed}", f"hydra.run.dir={cwd}/run{seed}"], cwd) for seed in range(1, n + 1)
        ]
        records = job_records(Path(cwd) / "sweep")
    if len(records) != n:
        raise SystemExit(f"the sweep wrote {len(records)} job records, expected {n}")
    ends = [end for end, _ in records]
    extra = [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]
    generation = [sum(r["run"]["timings_s"].get(stage, 0.0) for stage in GENERATION) for _, r in records[1:]]
    reused = [r["run"].get("reused", []) for _, r in records[1:]]
    marginal = statistics.median(e / g for e, g in zip(extra, generation, strict=True))
    print(f"recipe=tiny, {n} seeds, {keep}; machine load is shared: compare ratios, not seconds")
    print(f"sweep of {n}      {sweep:8.2f} s   (one process)")
    print(f"separate x {n}    {sum(separate):8.2f} s   (runs: {', '.join(f'{t:.1f}' for t in separate)})")
    print(f"extra job        {statistics.mean(extra):8.2f} s   wall in the sweep, jobs 2..{n}: "
          + ", ".join(f"{t:.2f}" for t in extra))  # fmt: skip
    print(f"its generation   {statistics.mean(generation):8.2f} s   denoise + decode + write, jobs 2..{n}: "
          + ", ".join(f"{t:.2f}" for t in generation))  # fmt: skip
    print(f"jobs 2..{n} reused: {sorted({item for items in reused for item in items}) or 'nothing'}")
    print(f"ratio={sweep / sum(separate):.3f} marginal={marginal:.3f} mem_ratio=nan")


if __name__ == "__main__":
    main()
