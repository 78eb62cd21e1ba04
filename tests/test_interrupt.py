"""Ctrl-C interrupts a barrier or a layer wait that a stalled store holds: the waits release the GIL
but still look at pending signals, so KeyboardInterrupt arrives while the store call is still stuck,
and the writer or loader stays usable."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import os, signal, threading, torch, kvdump
from kvdump.testing import StallingStore, every_key, no_key

def interrupt_soon():
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()

kv = torch.randn(2, 4, 4, 2, 8)
store = StallingStore(holds_put=every_key, limit=60, fails_at_limit=False)
writer = kvdump.AsyncWriter(store, num_threads=1)
writer.init()
kvdump.write_cache_store(writer, 0, kv, [0, 1], [11, 12], request="r")
assert store.entered.wait(60)
interrupt_soon()
try:
    writer.wait_all_done()
    raise SystemExit("the barrier returned")
except KeyboardInterrupt:
    assert store.held == 1, "interrupted only once the store call returned"
assert writer.state == "accepting"  # the cycle stays open: wait again or abort
writer.abort(0)

interrupt_soon()
try:
    with writer.cycle():
        kvdump.write_cache_store(writer, 0, kv, [0, 1], [13, 14], request="r")
    raise SystemExit("the cycle returned")
except KeyboardInterrupt:
    assert store.held >= 1
assert writer.state == "idle"  # cycle() aborted the interrupted cycle

store.release.set()
with writer.cycle(timeout=60):
    kvdump.write_cache_store(writer, 0, kv, [0, 1], [15, 16], request="r")
assert kvdump.lookup(store, [15, 16]) == 2

# A write, and a submit, blocked on a full queue behind the stalled put.
stalls = StallingStore(store, holds_put=every_key, limit=60, fails_at_limit=False)
full = kvdump.AsyncWriter(stalls, num_threads=1, queue_capacity=1, submit_timeout=60)
full.init()
kvdump.write_cache_store(full, 0, kv, [0, 1], [21, 22], request="a")
assert stalls.entered.wait(60)
kvdump.write_cache_store(full, 1, kv, [0, 1], [21, 22], request="a")  # fills the queue
for blocked in (
    lambda: kvdump.write_cache_store(full, 2, kv, torch.tensor([0, 1]), torch.tensor([21, 22]), request="a"),
    lambda: full.submit(lambda: None, label="blocked"),
):
    interrupt_soon()
    try:
        blocked()
        raise SystemExit("a call on a full queue returned")
    except KeyboardInterrupt:
        assert stalls.held == 1
full.abort(0)
stalls.release.set()

reads = StallingStore(store, holds_put=no_key, holds_get=every_key, limit=60, fails_at_limit=False)
loader = kvdump.KVLoader(reads, num_threads=1)
loader.start()
loader.load_async(0, torch.zeros(2, 4, 4, 2, 8), [0, 1], [15, 16])
assert reads.entered.wait(60)
interrupt_soon()
try:
    loader.wait_layer(0)
    raise SystemExit("wait_layer returned")
except KeyboardInterrupt:
    assert reads.held == 1
loader.abort(0)
reads.release.set()
print("interrupted")
"""


def test_ctrl_c_interrupts_waits_on_a_stalled_store() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "interrupted" in done.stdout
