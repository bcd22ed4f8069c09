"""Wall time of the ``telefuser`` CLI as a user runs it (a fresh process each time, everything included).

- ``--what generate``: ``telefuser generate recipe=tiny prompt="a red ball moving right" seed=7`` end to end
  (start-up, tiny model load, 8 denoising steps, decode, video write), run in a temporary working directory
  so its ``outputs/`` do not land in the repository. Ours only: there is no peer, so the last line says
  ``ratio=nan``. The tiny model is created in ``$TELEFUSER_CACHE`` (default ``~/.cache/telefuser``) on
  first use; the best of the repeats excludes that one-time cost.
- ``--what help``: ``telefuser --help`` against ``python -c pass`` (the interpreter's own start-up, same
  Python); ``ratio`` is their quotient, i.e. how many bare interpreter start-ups the CLI costs.

Time: best of ``--repeats``. No memory measure (``mem_ratio=nan``).

    python benchmarks/cli_time.py --what generate
    python benchmarks/cli_time.py --what help --repeats 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TELEFUSER = str(Path(sys.executable).parent / "telefuser")
GENERATE = [TELEFUSER, "generate", "recipe=tiny", "prompt=a red ball moving right", "seed=7"]


def wall(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"{command[0]} ... failed (exit {done.returncode})")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--what", choices=("generate", "help"), required=True)
    ap.add_argument("--repeats", type=int, default=None, help="default: 3 for generate, 5 for help")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.what == "generate" else 5)

    with tempfile.TemporaryDirectory(prefix="cli_time_") as cwd:
        if args.what == "generate":
            print(f"command: {' '.join(GENERATE[1:3])} prompt=... seed=7, best of {repeats}")
            times = [wall(GENERATE, cwd) for _ in range(repeats)]
            print("runs: " + ", ".join(f"{t:.2f}" for t in times) + " s")
            print(f"telefuser {min(times):8.3f} s wall")
            print("ratio=nan mem_ratio=nan")
            return
        commands = {"telefuser": [TELEFUSER, "--help"], "baseline": [sys.executable, "-c", "pass"]}
        print(f"telefuser --help vs python -c pass, best of {repeats}, alternating")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                times[name].append(wall(command, cwd))
        for name, values in times.items():
            print(f"{name:10s} {min(values):8.3f} s wall  (runs: {', '.join(f'{t:.3f}' for t in values)})")
        print(f"ratio={min(times['telefuser']) / min(times['baseline']):.3f} mem_ratio=nan")


if __name__ == "__main__":
    main()
