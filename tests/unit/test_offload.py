"""CPU offload: no-ops on a CPU device, and the block-sequential hooks' order and numbers (device-agnostic)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from telefuser_cli.families.wan.tiny import TINY_DIT
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.runtime.compile import compile_blocks
from telefuser_cli.runtime.offload import (
    ModelOffload,
    SequentialOffloader,
    apply_sequential_offload,
    model_offload,
    resident_count,
)

# Inductor leaves the complex RoPE product to eager kernels and warns each time; expected here.
pytestmark = [
    pytest.mark.numeric,
    pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex"),
]


def tiny_case(num_layers: int = 3):
    torch.manual_seed(0)
    dit = WanDiT(dataclasses.replace(TINY_DIT, num_layers=num_layers)).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(1)
    args = (
        torch.randn(1, 16, 2, 8, 8, generator=g),
        torch.tensor([500.0]),
        torch.randn(1, 7, TINY_DIT.text_dim, generator=g),
    )
    return dit, args


def pointers(module: torch.nn.Module) -> list[int]:
    return [p.data_ptr() for p in module.parameters()]


def test_sequential_offload_on_cpu_is_a_reported_no_op(caplog):
    dit, _ = tiny_case()
    before = pointers(dit)
    with caplog.at_level("INFO", logger="telefuser_cli.runtime.offload"):
        report, offloader = apply_sequential_offload(dit, torch.device("cpu"))
    assert not report.applied and offloader is None
    assert "no-op" in report.reason and "no-op" in caplog.text
    assert pointers(dit) == before
    assert all(not block._forward_pre_hooks for block in dit.blocks)


def test_model_offload_on_cpu_is_a_reported_no_op():
    dit, _ = tiny_case()
    before = pointers(dit)
    with model_offload(dit, torch.device("cpu")) as report:
        assert not report.applied
        assert pointers(dit) == before


def test_sequential_hooks_order_and_exact_numbers():
    """On a CPU 'device' the copies are real (new tensors) and synchronous: the order and the swap are tested."""
    dit, args = tiny_case()
    with torch.no_grad():
        reference = dit(*args)
        trace = []
        offloader = SequentialOffloader(dit.blocks, torch.device("cpu"), trace)
        hosts = [[h.data_ptr() for h in copy.host] for copy in offloader.copies]
        first = dit(*args)
        assert trace == [
            ("load", 0), ("prefetch", 1), ("release", 0),
            ("wait", 1), ("prefetch", 2), ("release", 1),
            ("wait", 2), ("prefetch", 0), ("release", 2),
        ]  # fmt: skip
        # released blocks point at their host copies; block 0 holds its prefetched copy for the next step
        assert [pointers(block) == host for block, host in zip(dit.blocks, hosts, strict=True)] == [
            False, True, True,
        ]  # fmt: skip
        trace.clear()
        second = dit(*args)
        assert trace[0] == ("wait", 0) and len(trace) == 9
        offloader.remove()
        assert [pointers(block) for block in dit.blocks] == hosts
        assert not any(block._forward_pre_hooks or block._forward_hooks for block in dit.blocks)
    # the blocks compute with exact copies of their weights: the same kernels on the same values, bit for bit
    assert torch.equal(first, reference) and torch.equal(second, reference)


def test_prefetch_depth_and_resident_blocks():
    """prefetch=2: two offloaded blocks copied ahead; resident=1: block 0 moves once and has no hooks."""
    dit, args = tiny_case(num_layers=4)
    with torch.no_grad():
        reference = dit(*args)
        trace = []
        offloader = SequentialOffloader(dit.blocks, torch.device("cpu"), trace, prefetch=2, resident=1)
        assert offloader.copies[0] is None and offloader.offloaded == [1, 2, 3]
        assert not dit.blocks[0]._forward_pre_hooks
        first = dit(*args)
        assert trace == [
            ("load", 1), ("prefetch", 2), ("prefetch", 3), ("release", 1),
            ("wait", 2), ("prefetch", 1), ("release", 2),  # block 3 was already in flight
            ("wait", 3), ("prefetch", 2), ("release", 3),  # blocks 1 and 2 in flight for the next step
        ]  # fmt: skip
        trace.clear()
        second = dit(*args)
        assert trace[:3] == [("wait", 1), ("prefetch", 3), ("release", 1)]
        offloader.remove()
        # a prefetch depth of at least the offloaded blocks is capped: each in flight once
        capped = SequentialOffloader(dit.blocks, torch.device("cpu"), prefetch=9, resident=2)
        assert capped.prefetch == 1
        capped.remove()
    assert torch.equal(first, reference) and torch.equal(second, reference)
    with pytest.raises(ValueError, match="prefetch 0 must be >= 1"):
        SequentialOffloader(dit.blocks, torch.device("cpu"), prefetch=0)
    assert resident_count(40, 0.25) == 10 and resident_count(4, 0.99) == 3 and resident_count(3, 0.0) == 0


def test_sequential_offload_with_compiled_blocks():
    """The hooks run eagerly around the compiled forwards: one graph, no recompilation per swapped block."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dit, args = tiny_case()
    with torch.no_grad():
        reference = dit(*args)
        trace = []
        SequentialOffloader(dit.blocks, torch.device("cpu"), trace)
        compile_blocks(dit, backend="aot_eager", fullgraph=True)
        dit(*args)
        out = dit(*args)
    torch._dynamo.reset()
    assert len(trace) == 18
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_model_offload_swaps_to_device_copies_and_back():
    dit, args = tiny_case(num_layers=2)
    with torch.no_grad():
        reference = dit(*args)
        offload = ModelOffload(dit, torch.device("cpu"))
        hosts = [h.data_ptr() for h in offload.copy.host]
        offload.load()
        assert not set(pointers(dit)) & set(hosts)
        loaded = dit(*args)
        offload.release()
        assert pointers(dit) == hosts
    assert torch.equal(loaded, reference)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sequential_offload_on_cuda_matches_and_holds_two_blocks_at_most():
    dit, args = tiny_case(num_layers=4)
    cuda = torch.device("cuda")
    with torch.no_grad():
        reference = dit.to(cuda)(*(a.to(cuda) for a in args)).cpu()
        dit.to("cpu")
        torch.cuda.empty_cache()
        report, offloader = apply_sequential_offload(dit, cuda)
        assert report.applied and offloader is not None
        assert all(h.is_pinned() for copy in offloader.copies for h in copy.host)
        block_bytes = offloader.copies[0].nbytes
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = dit(*(a.to(cuda) for a in args)).cpu()
        torch.cuda.synchronize()
        # resident: block 0 prefetched for the next step; at the peak, at most two blocks plus activations
        assert torch.cuda.memory_allocated() - base <= block_bytes + 2**20
    assert torch.equal(out, reference)
