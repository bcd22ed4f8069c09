"""`telefuser inspect DIR`: what a weights directory holds, read from headers and shapes only."""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path
from typing import Any

from telefuser_cli.errors import UserError
from telefuser_cli.loading.checkpoint import read_shapes
from telefuser_cli.loading.fp8 import detect_quant, read_dtypes
from telefuser_cli.loading.umt5_arch import infer_umt5_config
from telefuser_cli.loading.wan import dit_architecture, dit_shapes, locate
from telefuser_cli.loading.wan_vae_arch import infer_vae_config

DIT_PATTERNS = {
    "dit": "diffusion_pytorch_model*.safetensors",
    "dit_high": "high_noise_model/diffusion_pytorch_model*.safetensors",
    "dit_low": "low_noise_model/diffusion_pytorch_model*.safetensors",
}
OTHER_PATTERNS = {"text_encoder": "models_t5_umt5-xxl-enc-bf16.pth", "vae": "Wan2.1_VAE.pth"}


def _exists(root: Path, pattern: str) -> bool:
    return bool(glob.glob(str(root / pattern)))


def _describe_dit(root: Path, name: str, pattern: str) -> dict[str, Any]:
    files = locate(root, name, pattern)
    config = dit_architecture(files)
    params = sum(_numel(shape) for shape in dit_shapes(files).values())
    return {
        "files": [str(f) for f in files.files],
        "layout": "diffusers" if files.diffusers else "official",
        "quant": detect_quant(read_dtypes(files.files)),
        "parameters": params,
        "config": dataclasses.asdict(config),
    }


def _numel(shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def inspect_directory(root: Path) -> dict[str, Any]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    report: dict[str, Any] = {"root": str(root)}
    try:
        experts = [n for n in ("dit_high", "dit_low") if _exists(root, DIT_PATTERNS[n])]
        names = experts or ["dit"]
        for name in names:
            report[name] = _describe_dit(root, name, DIT_PATTERNS[name])
        report["moe"] = bool(experts)
        if _exists(root, OTHER_PATTERNS["text_encoder"]) or (root / "text_encoder").is_dir():
            files = locate(root, "text_encoder", OTHER_PATTERNS["text_encoder"])
            if not files.diffusers:
                report["text_encoder"] = dataclasses.asdict(infer_umt5_config(read_shapes(files.files)))
        if _exists(root, OTHER_PATTERNS["vae"]):
            files = locate(root, "vae", OTHER_PATTERNS["vae"])
            report["vae"] = dataclasses.asdict(infer_vae_config(read_shapes(files.files)))
    except ValueError as error:
        raise UserError(f"{root}: {error}") from None
    return report
