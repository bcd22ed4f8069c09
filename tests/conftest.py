"""Shared fixtures: isolated Hydra state and logging, a private model cache, one tiny checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra


@pytest.fixture(autouse=True)
def _clean_hydra_and_logging():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


@pytest.fixture(autouse=True, scope="session")
def _inductor_cache_per_cpu_capability():
    """Inductor's cache key leaves out ATEN_CPU_CAPABILITY (torch 2.13): C++ generated for AVX-512 by an earlier
    run is loaded, and fails to compile, under ATEN_CPU_CAPABILITY=default. One cache per capability."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if not capability or "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        yield
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.join(default_cache_dir(), f"capability-{capability}"))
        yield


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny Wan2.1 T2V directory in the official layout (made once per test session)."""
    from telefuser_cli.tiny import write_tiny_wan21

    return write_tiny_wan21(tmp_path_factory.mktemp("models") / "tiny_wan21", seed=0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Models created on first use go to a cache private to the test session."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("TELEFUSER_CACHE", str(cache))
    monkeypatch.delenv("TELEFUSER_MODEL_ROOT", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
