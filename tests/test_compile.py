"""torch.compile traces a forward that calls kvdump's ops: the writer travels through the graph as
a torch custom class, the fake kernels let it trace, and the compiled forward still writes every
layer, byte-exact, on every call."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import kvdump
from kvdump.cache_ops import write_cache_store

LAYERS = 4
BLOCKS = 6
SHAPE = (2, BLOCKS, 4, 2, 8)  # [K/V, blocks, block_size, heads, head_dim]


def forward_that_dumps(writer: kvdump.AsyncWriter, cache: list[torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A toy forward: each layer writes its KV into its cache and dumps blocks 1..4 of it."""

    def forward(x: torch.Tensor, ids: torch.Tensor, hashes: torch.Tensor) -> torch.Tensor:
        for layer in range(LAYERS):
            x = torch.tanh(x * (layer + 2))
            cache[layer].copy_(x.reshape(SHAPE))
            write_cache_store(writer, layer, cache[layer], ids, hashes, request="compiled")
        return x.sum()

    return forward


@pytest.mark.parametrize("fullgraph", [True, False], ids=["fullgraph", "with-breaks-allowed"])
def test_a_compiled_forward_writes_every_layer(make_writer: Callable[..., kvdump.AsyncWriter], fullgraph: bool) -> None:
    torch._dynamo.reset()
    store = kvdump.MemoryStore(capacity_bytes=64 << 20)
    writer = make_writer(store)
    cache = [torch.zeros(SHAPE) for _ in range(LAYERS)]
    eager = forward_that_dumps(writer, cache)
    compiled = torch.compile(eager, fullgraph=fullgraph, backend="inductor")
    ids = torch.tensor([1, 2, 3, 4])
    numel = int(torch.tensor(SHAPE).prod())
    for call in range(3):  # the first call compiles, the later ones replay the graph
        hashes = torch.arange(4, dtype=torch.int64) + 100 * call
        x = torch.randn(numel, generator=torch.Generator().manual_seed(call))
        writer.init()
        out = compiled(x, ids, hashes)
        report = writer.wait_all_done()
        assert report.submitted == LAYERS and report.failed == 0, (call, report)
        expected = [c.clone() for c in cache]
        assert torch.isclose(out, eager_sum(x)), call
        for layer in range(LAYERS):
            loaded = torch.full(SHAPE, float("nan"))
            kvdump.load_cache_store(store, layer, loaded, [0, 1, 2, 3], hashes)
            assert torch.equal(loaded[:, :4], expected[layer][:, 1:5]), (call, layer)


def eager_sum(x: torch.Tensor) -> torch.Tensor:
    for layer in range(LAYERS):
        x = torch.tanh(x * (layer + 2))
    return x.sum()


def test_a_writer_claims_its_context_once(make_writer: Callable[..., kvdump.AsyncWriter]) -> None:
    writer = make_writer()
    ((name, ticket),) = writer.torch_writer.__obj_flatten__()
    assert name == "ticket"
    with pytest.raises(ValueError, match=f"ticket {ticket} does not name a kvdump writer"):
        torch.classes.kvdump.Writer(ticket)
