"""torch.distributed for one video on many devices: process groups, validation, the launch environment.

Rank layout (ulysses innermost, so its all-to-all stays on the fastest links, then ring, then cfg)::

    rank = cfg_rank * (ring * ulysses) + ring_rank * ulysses + ulysses_rank

The sequence-parallel (sp) group of a rank is the ``ring * ulysses`` ranks with its cfg_rank; its index in
that group, ``sp_rank = ring_rank * ulysses + ulysses_rank``, is the token shard it holds (see
``ops.sequence_parallel``). The cfg group pairs the ranks holding the same shard: cfg_rank 0 runs the
conditional pass, cfg_rank 1 the unconditional one (``pipelines.sampling.CfgParallel``).

The environment of torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) is used as is; under
plain ``srun`` the SLURM variables (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) stand in for the first three.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ParallelGroups:
    """This rank's place in the layout and its process groups (None where the degree is 1)."""

    cfg_degree: int = 1
    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_rank: int = 0
    ulysses_rank: int = 0
    ring_rank: int = 0
    cfg_group: dist.ProcessGroup | None = None
    sp_group: dist.ProcessGroup | None = None
    ulysses_group: dist.ProcessGroup | None = None
    ring_group: dist.ProcessGroup | None = None
    ring_ranks: tuple[int, ...] = (0,)  # global ranks of this rank's ring group, by ring_rank
    device: torch.device = torch.device("cpu")

    @property
    def sp_degree(self) -> int:
        return self.ulysses_degree * self.ring_degree

    @property
    def sp_rank(self) -> int:
        return self.ring_rank * self.ulysses_degree + self.ulysses_rank

    @property
    def world_size(self) -> int:
        return self.cfg_degree * self.sp_degree


def _ulysses_suggestion(sp_degree: int, num_heads: int) -> str:
    ulysses = max(u for u in range(1, sp_degree + 1) if sp_degree % u == 0 and num_heads % u == 0)
    return f"sp_ulysses_degree={ulysses} sp_ring_degree={sp_degree // ulysses}"


def validate_parallel(
    *,
    world_size: int,
    num_heads: int,
    cfg_scales: Sequence[float],
    cfg_degree: int = 1,
    ulysses_degree: int = 1,
    ring_degree: int = 1,
) -> None:
    """Raise ValueError (naming the values and a fix) unless the degrees fit the world and the model.

    cfg_scales: the guidance scale of every DiT that will run (one, or two for the MoE experts).
    """
    for name, degree in (("cfg", cfg_degree), ("sp_ulysses", ulysses_degree), ("sp_ring", ring_degree)):
        if degree < 1:
            raise ValueError(f"{name}_degree={degree} must be >= 1")
    product = cfg_degree * ulysses_degree * ring_degree
    if product != world_size:
        raise ValueError(
            f"cfg_degree={cfg_degree} x sp_ulysses_degree={ulysses_degree} x sp_ring_degree={ring_degree} "
            f"= {product} processes, but the world size is {world_size}; make the degrees multiply to "
            f"{world_size} (or start {product} processes)"
        )
    if cfg_degree > 2:
        raise ValueError(f"cfg_degree={cfg_degree}: guidance has two passes, so cfg_degree is 1 or 2")
    if cfg_degree == 2 and all(scale == 1.0 for scale in cfg_scales):
        raise ValueError(
            f"cfg_degree=2 splits the conditional and unconditional passes, but the guidance scale is "
            f"{', '.join(str(s) for s in cfg_scales)} (1 runs no unconditional pass); use cfg_degree=1 "
            "and give the processes to sp_ulysses_degree / sp_ring_degree"
        )
    if num_heads % ulysses_degree:
        raise ValueError(
            f"sp_ulysses_degree={ulysses_degree} must divide the DiT's {num_heads} attention heads; for "
            f"{ulysses_degree * ring_degree}-way sequence parallelism use "
            f"{_ulysses_suggestion(ulysses_degree * ring_degree, num_heads)} (ring attention has no head limit)"
        )


def _env_int(environ: Mapping[str, str], *names: str, default: int | None = None) -> int | None:
    for name in names:
        if name in environ:
            return int(environ[name])
    return default


def launch_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables, else SLURM's, else a single process."""
    environ = os.environ if environ is None else environ
    rank = _env_int(environ, "RANK", "SLURM_PROCID", default=0)
    world = _env_int(environ, "WORLD_SIZE", "SLURM_NTASKS", default=1)
    local = _env_int(environ, "LOCAL_RANK", "SLURM_LOCALID", default=0)
    return rank, world, local


def build_groups(
    cfg_degree: int = 1, ulysses_degree: int = 1, ring_degree: int = 1, device: torch.device | None = None
) -> ParallelGroups:
    """Create the cfg / sp / ulysses / ring groups on an initialised default group (collective: every rank
    calls it with the same degrees). Can be called again for another layout of the same world."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if cfg_degree * ulysses_degree * ring_degree != world:
        raise ValueError(
            f"cfg_degree={cfg_degree} x sp_ulysses_degree={ulysses_degree} x sp_ring_degree={ring_degree} "
            f"!= world size {world}"
        )
    sp = ulysses_degree * ring_degree

    def at(c: int, r: int, u: int) -> int:
        return c * sp + r * ulysses_degree + u

    cfg_rank, rest = divmod(rank, sp)
    ring_rank, ulysses_rank = divmod(rest, ulysses_degree)

    def make(layouts: list[list[int]]) -> dist.ProcessGroup | None:
        # new_group is collective over the world: every rank creates every group, keeps its own
        mine = None
        for ranks in layouts:
            group = dist.new_group(ranks) if len(ranks) > 1 else None
            if rank in ranks:
                mine = group
        return mine

    cs, rs, us = range(cfg_degree), range(ring_degree), range(ulysses_degree)
    return ParallelGroups(
        cfg_degree=cfg_degree,
        ulysses_degree=ulysses_degree,
        ring_degree=ring_degree,
        cfg_rank=cfg_rank,
        ulysses_rank=ulysses_rank,
        ring_rank=ring_rank,
        cfg_group=make([[at(c, r, u) for c in cs] for r in rs for u in us]),
        sp_group=make([[at(c, r, u) for r in rs for u in us] for c in cs]),
        ulysses_group=make([[at(c, r, u) for u in us] for c in cs for r in rs]),
        ring_group=make([[at(c, r, u) for r in rs] for c in cs for u in us]),
        ring_ranks=tuple(at(cfg_rank, r, ulysses_rank) for r in rs),
        device=device if device is not None else torch.device("cpu"),
    )


def init_distributed(
    cfg_degree: int = 1,
    ulysses_degree: int = 1,
    ring_degree: int = 1,
    backend: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ParallelGroups:
    """Join the process group described by the environment and build the parallel groups.

    backend: None picks nccl when CUDA is available (device ``cuda:LOCAL_RANK``), else gloo (device cpu).
    A single process (no WORLD_SIZE, or 1) with all degrees 1 initialises nothing.
    Raises ValueError when the degrees do not multiply to the world size.
    """
    environ = os.environ if environ is None else environ
    rank, world, local_rank = launch_environment(environ)
    if cfg_degree * ulysses_degree * ring_degree != world:
        raise ValueError(
            f"cfg_degree={cfg_degree} x sp_ulysses_degree={ulysses_degree} x sp_ring_degree={ring_degree} "
            f"!= world size {world} (from WORLD_SIZE / SLURM_NTASKS)"
        )
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world == 1:
        return ParallelGroups(device=device)
    if not dist.is_initialized():
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in environ]
        if missing:
            raise ValueError(
                f"{' and '.join(missing)} not set: start the processes with torchrun (or set them for srun)"
            )
        # env:// reads MASTER_ADDR/PORT and, under torchrun, reuses its agent's store; rank and world size
        # are passed so SLURM's variables work too
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"), rank=rank, world_size=world)
    return build_groups(cfg_degree, ulysses_degree, ring_degree, device)


def is_main_process() -> bool:
    """True on global rank 0, and in a run without torch.distributed: the one process that writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (e.g. a seed drawn at random); identity without torch.distributed."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
