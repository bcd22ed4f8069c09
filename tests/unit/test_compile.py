"""Regional torch.compile of the Wan DiT blocks: one traced graph for all blocks, eager numbers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from telefuser_cli.families.wan.tiny import TINY_DIT
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.runtime.compile import compile_blocks, compiler_available

# Inductor leaves the complex RoPE product to eager kernels and warns each time; expected here.
pytestmark = [
    pytest.mark.numeric,
    pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex"),
]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """One intra-op thread (tiny ops on a loaded 2-core machine), and no compiled code from other tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()
    torch.set_num_threads(threads)


def tiny_case():
    torch.manual_seed(0)
    dit = WanDiT(dataclasses.replace(TINY_DIT, num_layers=3)).eval()
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


def test_one_graph_for_all_blocks_without_breaks():
    """Dynamo only (no code generation): fast, and checks the block traces whole and is shared."""
    dit, args = tiny_case()
    with torch.no_grad():
        eager = dit(*args)
        compile_blocks(dit, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
        compiled = dit(*args)
        dit(*args)  # a second step: no recompilation
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # 3 blocks, one trace
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # Inductor's C++ code generation: ~45 s on the shared 2-core machine, a few s when cached
@pytest.mark.skipif(not compiler_available()[0], reason=compiler_available()[1])
def test_inductor_matches_eager():
    dit, args = tiny_case()
    with torch.no_grad():
        eager = dit(*args)
        compiled = compile_blocks(dit)(*args)
    # float32: the fused kernels reassociate sums, so round-off, not bits
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
