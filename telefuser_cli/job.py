"""One job: the task function Hydra runs for `generate` (once, or once per sweep point)."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from telefuser_cli.config.dump import build_document, to_json
from telefuser_cli.config.validate import check_supported, to_settings, validate
from telefuser_cli.errors import UserError
from telefuser_cli.io.files import atomic_write_text
from telefuser_cli.pipelines.plan import sampling_plan

log = logging.getLogger(__name__)

CONFIG_JSON = "config.json"
RESOLVED_YAML = "resolved_config.yaml"


def _choices(cfg: DictConfig) -> dict[str, Any]:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return dict(cfg.hydra.runtime.choices) if "hydra" in cfg else {}


def write_config_files(output_dir: Path, cfg: DictConfig, document: dict[str, Any]) -> None:
    resolved = OmegaConf.masked_copy(cfg, ["model", "pipeline", "user", "output", "launcher"])
    atomic_write_text(output_dir / RESOLVED_YAML, OmegaConf.to_yaml(resolved, resolve=True))
    atomic_write_text(output_dir / CONFIG_JSON, to_json(document))


def _resolve_seed(settings, cfg: DictConfig, share: Callable[[int], int]) -> None:
    """user.seed=-1: draw one (shared by every rank through `share`) and record it."""
    if settings.user.seed == -1:
        settings.user.seed = share(secrets.randbelow(2**31))
        cfg.user.seed = settings.user.seed
        log.info("user.seed=-1: drew seed %d", settings.user.seed)


def run_job(cfg: DictConfig, dry_run: bool = False) -> dict[str, Any]:
    """Validate, record the configuration, and (unless dry_run) generate the video.

    A mistake the user can fix comes back as status "failed" with its message (Hydra would
    otherwise print its own banner around it); anything else is a bug and propagates.
    """
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return _run(cfg, output_dir, dry_run)
    except UserError as error:
        log.error("%s", error)
        return {"output_dir": str(output_dir), "status": "failed", "error": str(error)}


def _run(cfg: DictConfig, output_dir: Path, dry_run: bool) -> dict[str, Any]:
    settings = to_settings(cfg)
    plan = validate(settings)
    check_supported(settings)
    choices = _choices(cfg)
    sampling = sampling_plan(settings.pipeline, settings.model.moe)
    if dry_run:
        _resolve_seed(settings, cfg, lambda seed: seed)
        write_config_files(
            output_dir, cfg, build_document(settings, plan, choices, extra={"sampling": sampling})
        )
        return {"output_dir": str(output_dir), "status": "dry-run", "seed": settings.user.seed}

    # torch is imported only from here on
    from telefuser_cli.pipelines.generate import generate, start_parallel
    from telefuser_cli.runtime.device import claimed_gpu
    from telefuser_cli.runtime.distributed import broadcast_int, destroy_distributed, is_main_process

    groups = start_parallel(settings)
    if groups.world_size > 1:  # record the processes per node this run really had (torchrun's own count)
        settings.launcher.nproc_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", groups.world_size))
        cfg.launcher.nproc_per_node = settings.launcher.nproc_per_node
    try:
        _resolve_seed(settings, cfg, broadcast_int)  # every rank draws the same noise
        document = build_document(settings, plan, choices, extra={"sampling": sampling})
        if is_main_process():
            write_config_files(output_dir, cfg, document)
        config_hash = hashlib.sha256(to_json(document).encode("utf-8")).hexdigest()
        with claimed_gpu(settings):
            result = generate(settings, plan, output_dir, config_hash, groups)
    finally:
        destroy_distributed()
    if result is None:
        return {"output_dir": str(output_dir), "status": "worker", "seed": settings.user.seed}
    document = build_document(
        settings, plan, choices, device=result.device, extra={"sampling": sampling, "run": result.record()}
    )
    write_config_files(output_dir, cfg, document)
    return {
        "output_dir": str(output_dir),
        "status": "done",
        "seed": settings.user.seed,
        "video": str(result.video_path),
    }
