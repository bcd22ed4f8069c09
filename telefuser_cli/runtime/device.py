"""Devices and dtypes of the components, resolved from their runtime configs."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
from collections.abc import Iterator

import torch

from telefuser_cli.config.schema import AttnImpl, DeviceType, DType, ModelRuntimeConfig, RootConfig
from telefuser_cli.errors import UserError
from telefuser_cli.ops.attention import available_backends
from telefuser_cli.runtime.device_claims import claim_devices

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


def attention_backend(runtime: ModelRuntimeConfig, device: torch.device) -> str:
    """AUTO: the fastest installed backend for the device; otherwise exactly the one asked for."""
    impl = runtime.attention_config.attn_impl
    if impl is not AttnImpl.AUTO:
        return impl.value
    if device.type == "cuda":
        installed = available_backends()
        for candidate in ("FLASH_ATTN_3", "FLASH_ATTN_2"):
            if candidate in installed:
                return candidate
    return AttnImpl.TORCH_SDPA.value


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


def host_available_bytes() -> int | None:
    """Memory the host can still give (Linux ``MemAvailable``); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def claimed_gpu(settings: RootConfig) -> Iterator[int | None]:
    """Hold one free GPU of this machine for the job and point every component at it.

    Jobs of a local parallel sweep (joblib) then never share a GPU. Skipped on CPU machines, in
    torch.distributed runs (ranks use LOCAL_RANK) and when the user chose a device_id.
    """
    pipeline = settings.pipeline
    runtimes = [
        r
        for r in (
            pipeline.dit_config,
            pipeline.dit_high_config,
            pipeline.dit_low_config,
            pipeline.text_encoding_config,
            pipeline.vae_config,
            pipeline.clip_config,
        )
        if r is not None and r.device_type is not DeviceType.cpu
    ]
    chosen = any(r.device_id != 0 for r in runtimes)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not torch.cuda.is_available() or distributed or chosen or not runtimes:
        yield None
        return
    with claim_devices(1, torch.cuda.device_count()) as ids:
        for runtime in runtimes:
            runtime.device_id = ids[0]
        yield ids[0]


# Whether free_memory runs a full garbage collection. A full one costs ~0.2 s once torch and Hydra are loaded
# and is needed only where a released component sits in a reference cycle (transformers' Qwen2.5-VL does;
# our modules are freed by reference counting). The kept-components registry (runtime/resident.py) turns
# it off for a job whose components it keeps, and collects fully itself when it drops one.
_full_collection = True


def full_collections(on: bool) -> None:
    global _full_collection
    _full_collection = on


def free_memory() -> None:
    """Return released modules' memory now (call after the last reference is gone)."""
    gc.collect() if _full_collection else gc.collect(1)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
