"""Shared fixtures: isolated Hydra state and logging, a private model cache, tiny checkpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra


@pytest.fixture(autouse=True)
def _clean_hydra_and_logging():
    from telefuser_cli.runtime.resident import RESIDENT

    GlobalHydra.instance().clear()
    RESIDENT.clear()  # each test starts as a fresh process would: nothing kept from another test's jobs
    yield
    GlobalHydra.instance().clear()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


# Environment variables that make torch pick other CPU kernels (make test-kernels sets some of them).
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def pytest_configure(config):
    """One Inductor cache per combination of kernel settings. Its cache key leaves them out (torch 2.13): code
    compiled for AVX-512 by an earlier run is loaded under ATEN_CPU_CAPABILITY=default (and fails to compile) or
    avx2 (and returns NaN). Set here, before anything imports Inductor, which fixes the directory on first use."""
    chosen = [
        f"{name.lower()}-{os.environ[name].lower()}" for name in KERNEL_SETTINGS if os.environ.get(name)
    ]
    if chosen and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        directory = os.path.join(default_cache_dir(), "kernels_" + "_".join(chosen))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny Wan2.1 T2V directory in the official layout (made once per test session)."""
    from telefuser_cli.families.wan.tiny import write_tiny_wan21

    return write_tiny_wan21(tmp_path_factory.mktemp("models") / "tiny_wan21", seed=0)


@pytest.fixture(scope="session")
def i2v_root(tmp_path_factory) -> Path:
    """A tiny Wan2.1 I2V directory (DiT with image inputs, CLIP) in the official layout, made once."""
    from telefuser_cli.families.tiny import write_tiny

    return write_tiny("tiny_wan21_i2v", tmp_path_factory.mktemp("i2v") / "tiny_wan21_i2v")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Models created on first use go to a cache private to the test session."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("TELEFUSER_CACHE", str(cache))
    monkeypatch.delenv("TELEFUSER_MODEL_ROOT", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
