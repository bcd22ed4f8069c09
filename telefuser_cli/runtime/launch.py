"""``launcher.nproc_per_node=N``: start torch.distributed's own launcher (torchrun) for the user.

The command is re-run as ``python -m torch.distributed.run --standalone --nproc-per-node N -m telefuser_cli
ARGS`` with the launcher override removed, so the children run the same command as N ranks. A process that
is already part of a distributed run (torchrun's WORLD_SIZE, or several SLURM tasks) is never relaunched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

LAUNCHER_KEY = "launcher.nproc_per_node"


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def strip_launcher_override(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``launcher.nproc_per_node=N`` (also its ``+``/``++``/``~`` forms)."""
    return [arg for arg in argv if _override_key(arg) != LAUNCHER_KEY]


def already_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """True inside torchrun (WORLD_SIZE set) or a multi-task SLURM step."""
    environ = os.environ if environ is None else environ
    return "WORLD_SIZE" in environ or int(environ.get("SLURM_NTASKS", "1")) > 1


def should_relaunch(nproc: int, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``launcher.nproc_per_node=nproc`` asks for a relaunch here (nproc > 1, not yet distributed)."""
    if nproc < 1:
        raise ValueError(f"{LAUNCHER_KEY}={nproc} must be >= 1")
    return nproc > 1 and not already_distributed(environ)


def torchrun_command(nproc: int, argv: Sequence[str], module: str = "telefuser_cli") -> list[str]:
    """The torchrun command line that runs ``python -m module argv`` as ``nproc`` local ranks."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", module, *strip_launcher_override(argv),
    ]  # fmt: skip


def relaunch_with_torchrun(nproc: int, argv: Sequence[str], module: str = "telefuser_cli") -> int:
    """Run ``module argv`` under torchrun with ``nproc`` processes on this node; returns its exit code.

    argv: the arguments after the program name (``sys.argv[1:]``). Raises ValueError when this process is
    already distributed (a relaunch would nest launchers) or ``nproc`` < 2.
    """
    if already_distributed():
        raise ValueError(
            f"{LAUNCHER_KEY}={nproc}: this process already runs under torch.distributed "
            f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')}); drop {LAUNCHER_KEY} when starting with torchrun/srun"
        )
    if nproc < 2:
        raise ValueError(f"{LAUNCHER_KEY}={nproc}: a relaunch needs at least 2 processes")
    return subprocess.run(torchrun_command(nproc, argv, module), check=False).returncode
