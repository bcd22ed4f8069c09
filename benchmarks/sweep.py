"""What a seed sweep costs: one ``telefuser generate -m`` process against separate CLI runs, and each extra
job against its own generation work.

In one run, in a temporary working directory (fresh processes, everything included):

- ``sweep``: ``telefuser generate -m recipe=tiny prompt=... seed=1,...,N`` (N = ``--jobs``, default 8);
- ``separate``: the same N jobs as N separate ``telefuser generate`` processes;
- ``sweep of 1``: the same command with one seed, so that ``(sweep - sweep of 1) / (N - 1)`` is the marginal
  wall time of an extra job in a sweep;
- ``generation``: each extra job's own denoise + decode + video write, from its ``config.json`` timings.

Prints ``ratio=`` (sweep / separate) and ``marginal=`` (an extra job's wall time in the sweep / its
generation time: 1.0 would mean nothing but generation; what is above is Hydra's job set-up, the records,
and anything loaded or encoded again). ``--keep-loaded false`` measures the sweep without kept components.

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


def job_records(sweep_dir: Path) -> list[dict]:
    """The jobs' config.json in job order (job folders start with the job's index)."""
    folders = sorted(p for p in sweep_dir.iterdir() if (p / "config.json").is_file())
    return [json.loads((p / "config.json").read_text(encoding="utf-8")) for p in folders]


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
        one = wall([BASE[0], "-m", *BASE[1:], keep, "seed=1", f"hydra.sweep.dir={cwd}/one"], cwd)
        sweep = wall([BASE[0], "-m", *BASE[1:], keep, f"seed={seeds}", f"hydra.sweep.dir={cwd}/sweep"], cwd)
        separate = [
            wall([*BASE, f"seed={seed}", f"hydra.run.dir={cwd}/run{seed}"], cwd) for seed in range(1, n + 1)
        ]
        records = job_records(Path(cwd) / "sweep")
    if len(records) != n:
        raise SystemExit(f"the sweep wrote {len(records)} job records, expected {n}")
    generation = [sum(r["run"]["timings_s"].get(stage, 0.0) for stage in GENERATION) for r in records[1:]]
    reused = [r["run"].get("reused", []) for r in records[1:]]
    marginal = (sweep - one) / (n - 1)
    print(f"recipe=tiny, {n} seeds, {keep}; machine load is shared: compare ratios, not seconds")
    print(f"sweep of {n}      {sweep:8.2f} s   (one process)")
    print(f"separate x {n}    {sum(separate):8.2f} s   (runs: {', '.join(f'{t:.1f}' for t in separate)})")
    print(f"sweep of 1       {one:8.2f} s")
    print(f"extra job        {marginal:8.2f} s   wall, in the sweep: (sweep of {n} - sweep of 1) / {n - 1}")
    print(
        f"its generation   {statistics.mean(generation):8.2f} s   denoise + decode + write (mean of jobs 2..{n})"
    )
    print(f"jobs 2..{n} reused: {sorted({item for items in reused for item in items}) or 'nothing'}")
    print(
        f"ratio={sweep / sum(separate):.3f} marginal={marginal / statistics.mean(generation):.3f} mem_ratio=nan"
    )


if __name__ == "__main__":
    main()
