"""CPU offload of model weights, applied from outside: whole-model (per stage) and block-sequential (DiT).

Both keep one host copy of every parameter and buffer (pinned on CUDA, so host-to-device copies are
asynchronous DMA) and swap ``tensor.data`` between it and a device copy. Weights are never copied back:
inference does not change them, so releasing a module is dropping its device copy.

- :func:`model_offload` / :class:`ModelOffload`: a component comes to the device for its stage and leaves
  after (MODEL_CPU_OFFLOAD).
- :func:`apply_sequential_offload`: the DiT's non-block modules (embeddings, head; < 3% of the weights) stay
  on the device, each transformer block comes to the device right before it runs, and the next
  ``prefetch_blocks`` blocks are copied on a side CUDA stream while the current one computes; a block leaves
  right after it ran. At most ``1 + prefetch_blocks`` offloaded blocks are on the device at a time
  (SEQUENTIAL_CPU_OFFLOAD). After the last block, the first offloaded ones are prefetched for the next step.
  ``resident_ratio``: the first fraction of the blocks stays on the device (no hooks, no copies).

fp8-resident layers (``ops.fp8_linear.Fp8Linear``) hold their weight and scale as buffers: they are copied as
fp8 bytes, like every other tensor here.

On a CPU device there is nothing to offload: both are no-ops and say so (return value and a log line).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers of ``module``, each once (shared ones are not copied twice)."""
    seen: dict[int, torch.Tensor] = {}
    for t in (*module.parameters(), *module.buffers()):
        seen.setdefault(id(t), t)
    return list(seen.values())


class _HostCopy:
    """The host copies of a module's tensors, and the swap of their ``.data`` to a device copy and back."""

    def __init__(self, module: nn.Module, pin: bool):
        self.tensors = _tensors(module)
        self.host = []
        for t in self.tensors:
            data = t.data.to("cpu")
            self.host.append(data.pin_memory() if pin and not data.is_pinned() else data)
            t.data = self.host[-1]
        self.nbytes = sum(h.nbytes for h in self.host)

    def to_device(self, device: torch.device) -> None:
        """Point every tensor at a fresh device copy (asynchronous from pinned memory on the current stream)."""
        for t, h in zip(self.tensors, self.host, strict=True):
            t.data = h.to(device, non_blocking=True, copy=True)  # copy: a CPU "device" too (tests)

    def to_host(self, stream: torch.cuda.Stream | None = None) -> None:
        """Point every tensor back at its host copy; the device copies are freed when the kernels using them
        on ``stream`` are done (``record_stream`` keeps the caching allocator from reusing them earlier)."""
        for t, h in zip(self.tensors, self.host, strict=True):
            if stream is not None and t.data.is_cuda:
                t.data.record_stream(stream)
            t.data = h


@dataclass
class OffloadReport:
    """What an offload call did: ``applied`` False means a no-op, ``reason`` says why."""

    applied: bool
    reason: str
    offloaded_bytes: int = 0
    resident_bytes: int = 0


class ModelOffload:
    """A module whose weights live on the host and come to ``device`` between :meth:`load` and :meth:`release`."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.module, self.device = module, torch.device(device)
        self.copy = _HostCopy(module, pin=self.device.type == "cuda")

    def load(self) -> None:
        self.copy.to_device(self.device)

    def release(self) -> None:
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        self.copy.to_host(stream)


@contextlib.contextmanager
def model_offload(module: nn.Module, device: torch.device) -> Iterator[OffloadReport]:
    """Within the block, ``module`` is on ``device``; before and after, on the host (pinned on CUDA).

    On a CPU device the module is left as it is and the report says so.
    """
    device = torch.device(device)
    if device.type == "cpu":
        yield OffloadReport(False, "the device is the CPU: nothing to offload")
        return
    offload = ModelOffload(module, device)
    offload.load()
    try:
        yield OffloadReport(True, f"model offload to {device}", offload.copy.nbytes)
    finally:
        offload.release()


def resident_count(num_blocks: int, resident_ratio: float) -> int:
    """How many of the first blocks stay on the device: ``floor(ratio * blocks)``, leaving at least one
    offloaded (a ratio in [0, 1) is validated before loading)."""
    return min(int(resident_ratio * num_blocks), num_blocks - 1)


class SequentialOffloader:
    """Moves ``blocks`` to ``device`` one at a time around their forward, prefetching the next ones.

    The first ``resident`` blocks move to ``device`` once and stay. Hooks on the others: before block i runs,
    wait for its copy (or start it, if nothing prefetched it) and start copying the next ``prefetch``
    offloaded blocks (wrapping to the first offloaded one) on the side stream; after block i ran, drop its
    device copy. Device-agnostic: on a non-CUDA device the copies are synchronous and there is no side stream,
    which is what tests use to check the order of events in ``trace`` (a list of ``(event, block index)``).
    ``copies[i]`` is None for a resident block.
    """

    def __init__(
        self, blocks: nn.ModuleList, device: torch.device, trace: list | None = None, *, prefetch: int = 1,
        resident: int = 0,
    ) -> None:  # fmt: skip
        if prefetch < 1 or not 0 <= resident < len(blocks):
            raise ValueError(
                f"prefetch {prefetch} must be >= 1 and resident {resident} in [0, {len(blocks)})"
            )
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.blocks = list(blocks)
        for block in self.blocks[:resident]:
            block.to(self.device)
        self.offloaded = list(range(resident, len(self.blocks)))
        self.copies: list[_HostCopy | None] = [None] * resident + [
            _HostCopy(block, pin=cuda) for block in self.blocks[resident:]
        ]
        self.prefetch = min(prefetch, len(self.offloaded) - 1)
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.ready: dict[int, torch.cuda.Event | None] = {}  # block index -> copy done event (prefetched)
        self.trace = trace
        self.handles = []
        for i in self.offloaded:
            self.handles.append(self.blocks[i].register_forward_pre_hook(self._before(i)))
            self.handles.append(self.blocks[i].register_forward_hook(self._after(i)))

    def _log(self, event: str, i: int) -> None:
        if self.trace is not None:
            self.trace.append((event, i))

    def _prefetch(self, i: int) -> None:
        if i in self.ready:
            return
        self._log("prefetch", i)
        if self.stream is None:
            self.copies[i].to_device(self.device)
            self.ready[i] = None
            return
        # No wait on the main stream: the copy reads immutable pinned host memory into fresh device memory,
        # and memory freed by released blocks is guarded by record_stream.
        with torch.cuda.stream(self.stream):
            self.copies[i].to_device(self.device)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.ready[i] = event

    # The hooks swap tensors' storage (``.data``), which Dynamo cannot trace: they stay eager around a compiled
    # block (runtime.compile), and the compiled code sees the same parameters with new storage.

    def _before(self, i: int):
        @torch.compiler.disable
        def hook(module, args):
            if i in self.ready:
                event = self.ready.pop(i)
                self._log("wait", i)
                if event is not None:
                    torch.cuda.current_stream(self.device).wait_event(event)
            else:
                self._log("load", i)
                self.copies[i].to_device(self.device)
            position = self.offloaded.index(i)
            for ahead in range(1, self.prefetch + 1):
                self._prefetch(self.offloaded[(position + ahead) % len(self.offloaded)])

        return hook

    def _after(self, i: int):
        @torch.compiler.disable
        def hook(module, args, output):
            self._log("release", i)
            stream = torch.cuda.current_stream(self.device) if self.stream is not None else None
            self.copies[i].to_host(stream)

        return hook

    def remove(self) -> None:
        """Remove the hooks and drop every device copy (the blocks stay on the host)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for i in list(self.ready):
            self.ready.pop(i)
            self.copies[i].to_host(None)  # only offloaded blocks are ever prefetched


def apply_sequential_offload(
    dit: nn.Module, device: torch.device, prefetch_blocks: int = 1, resident_ratio: float = 0.0
) -> tuple[OffloadReport, SequentialOffloader | None]:
    """Block-sequential offload of ``dit`` onto ``device``, in place: the blocks its class's ``runtime_plan``
    names.

    Everything but the blocks moves to ``device`` and stays, with the first ``resident_ratio`` of the blocks;
    the other blocks go to host memory (pinned) and come to the device one at a time, ``prefetch_blocks``
    ahead (see :class:`SequentialOffloader`). Returns the report and the offloader
    (``None`` on a CPU device, where this is a no-op: the report says so and a log line too). Do not call
    ``dit.to(...)`` afterwards: it would move the host copies' views, not the offloaded blocks.
    """
    device = torch.device(device)
    if device.type == "cpu":
        reason = "the device is the CPU: SEQUENTIAL_CPU_OFFLOAD is a no-op"
        log.info("%s", reason)
        return OffloadReport(False, reason), None
    blocks_attr = type(dit).runtime_plan.blocks
    blocks = getattr(dit, blocks_attr)
    for name, child in dit.named_children():
        if name != blocks_attr:
            child.to(device)
    for p in dit.parameters(recurse=False):
        p.data = p.data.to(device)
    offloader = SequentialOffloader(
        blocks, device, prefetch=prefetch_blocks, resident=resident_count(len(blocks), resident_ratio)
    )
    offloaded = sum(copy.nbytes for copy in offloader.copies if copy is not None)
    resident = sum(t.nbytes for t in _tensors(dit)) - offloaded
    report = OffloadReport(True, f"blocks offloaded to the host, prefetched to {device}", offloaded, resident)
    log.info(
        "sequential offload: %.2f GiB of blocks on the host, %.2f GiB resident on %s",
        offloaded / 2**30,
        resident / 2**30,
        device,
    )
    return report, offloader
