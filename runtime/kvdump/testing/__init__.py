"""Testing aids: stores for users' own tests and for kvdump's tests and benchmarks.

| aid | module | what it is for |
|---|---|---|
| ``DictStore`` | :mod:`kvdump.stores.dict_store` | a complete store written in Python (``dict://``) |
| ``ForwardingStore`` | :mod:`kvdump.testing.forwarding_store` | the base of a Python store wrapping another |
| ``FailingStore`` | :mod:`kvdump.testing.failing_store` | refuses the puts of chosen keys (``block_keys``) |
| ``StallingStore`` | :mod:`kvdump.testing.stalling_store` | holds chosen calls until released, counting them |
| ``VllmEngine`` | :mod:`kvdump.testing.vllm_harness` | vLLM's real scheduler driving the connector on CPU |

:mod:`kvdump.testing.vllm_harness` imports vLLM, so it is not imported here: import it by name."""

from __future__ import annotations

from kvdump.stores.dict_store import DictStore
from kvdump.testing.failing_store import FailingStore, block_keys, no_room
from kvdump.testing.forwarding_store import ForwardingStore
from kvdump.testing.stalling_store import StallingStore, every_key, no_key

__all__ = [
    "DictStore",
    "FailingStore",
    "ForwardingStore",
    "StallingStore",
    "block_keys",
    "every_key",
    "no_key",
    "no_room",
]
