"""GPU assignment for parallel jobs on one machine, tested without GPUs (lock files only)."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from telefuser_cli.errors import UserError
from telefuser_cli.runtime.device_claims import claim_devices


def test_no_gpus_is_a_no_op(tmp_path):
    with claim_devices(1, total=0, lock_dir=tmp_path) as ids:
        assert ids == []
    assert not list(tmp_path.iterdir())


def test_concurrent_jobs_get_disjoint_devices(tmp_path):
    with (
        claim_devices(2, total=8, lock_dir=tmp_path) as first,
        claim_devices(2, total=8, lock_dir=tmp_path) as second,
    ):
        assert first == [0, 1] and second == [2, 3]
    with claim_devices(4, total=8, lock_dir=tmp_path) as again:
        assert again == [0, 1, 2, 3]  # released on exit


def _hold(lock_dir, ready, release):
    with claim_devices(1, total=2, lock_dir=lock_dir) as ids:
        ready.put(ids)
        release.wait(10)


def test_a_job_waits_until_enough_are_free(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Queue(), context.Event()
    other = context.Process(target=_hold, args=(tmp_path, ready, release))
    other.start()
    try:
        assert ready.get(timeout=30) == [0]
        with pytest.raises(UserError, match="no 2 free GPU"):
            with claim_devices(2, total=2, lock_dir=tmp_path, timeout_s=0.3, poll_s=0.05):
                pass
        release.set()
        other.join(10)
        start = time.monotonic()
        with claim_devices(2, total=2, lock_dir=tmp_path, timeout_s=5, poll_s=0.05) as ids:
            assert ids == [0, 1]
        assert time.monotonic() - start < 5
    finally:
        release.set()
        other.join(10)


def test_asking_for_more_than_the_machine_has(tmp_path):
    with pytest.raises(UserError, match="needs 3 GPUs but the machine has 2"):
        with claim_devices(3, total=2, lock_dir=tmp_path):
            pass
