"""Devices and dtypes of the components, resolved from their runtime configs."""

from __future__ import annotations

import resource
import sys

import torch

from telefuser_cli.config.schema import DeviceType, DType, ModelRuntimeConfig
from telefuser_cli.errors import UserError

DTYPES = {DType.float32: torch.float32, DType.bfloat16: torch.bfloat16, DType.float16: torch.float16}


def resolve_device(runtime: ModelRuntimeConfig, name: str) -> torch.device:
    if runtime.device_type is DeviceType.cpu:
        return torch.device("cpu")
    if runtime.device_type is DeviceType.cuda and not torch.cuda.is_available():
        raise UserError(f"pipeline.{name}.device_type=cuda but no CUDA device is available; use cpu or auto")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if runtime.device_id >= count:
            raise UserError(f"pipeline.{name}.device_id={runtime.device_id}: this machine has {count} GPU(s)")
        return torch.device("cuda", runtime.device_id)
    return torch.device("cpu")


def resolve_dtype(runtime: ModelRuntimeConfig) -> torch.dtype:
    return DTYPES[runtime.torch_dtype]


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak host RSS (and device memory, where there is a device) in GiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    peaks = {"host_rss_gib": round(rss_bytes / 2**30, 3)}
    if device.type == "cuda":
        peaks["device_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return peaks
