"""A writer or loader copied into a forked child: its threads exist only in the parent, so in the
child it refuses new work by name, closes at once, and lets the child exit; the parent's goes on."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import os, sys, torch, kvdump
kv = torch.randn(2, 4, 4, 2, 8)
store = kvdump.MemoryStore(capacity_bytes=16 << 20)
writer = kvdump.AsyncWriter(store, num_threads=2)
with writer.cycle(timeout=30):
    kvdump.write_cache_store(writer, 0, kv, [0, 1], [100, 101])
loader = kvdump.KVLoader(store, num_threads=1)
open_cycle = kvdump.AsyncWriter(store, num_threads=1)
open_cycle.init()  # a cycle open in the parent at the fork
from kvdump.testing import StallingStore
stalled = StallingStore(store, limit=60, fails_at_limit=False)
inside = kvdump.AsyncWriter(stalled, num_threads=1)
inside.init()
kvdump.write_cache_store(inside, 0, kv, [0, 1], [400, 401])
assert stalled.entered.wait(60)  # a parent thread is inside a Python store call at the fork
pid = os.fork()
if pid == 0:
    # That call is the parent's: the child's exit has none of its own to wait for.
    assert kvdump._C.refuse_python_calls_at_exit(0) == 0
    try:
        kvdump.write_cache_store(open_cycle, 0, kv, [0, 1], [300, 301])
        print("child: a write was queued for threads that do not exist")
        os._exit(3)
    except kvdump.LifecycleError as error:
        assert "forked" in str(error), error
    for call in (writer.init, lambda: writer.wait_all_done(timeout=1), lambda: writer.abort(1), loader.start):
        try:
            call()
            print("child: a call was accepted")
            os._exit(3)
        except kvdump.LifecycleError as error:
            assert "forked" in str(error), error
    writer.close(1.0)  # returns at once: nothing of the parent's to wait for
    fresh = kvdump.AsyncWriter(kvdump.MemoryStore(capacity_bytes=16 << 20), num_threads=2)
    with fresh.cycle(timeout=30):
        kvdump.write_cache_store(fresh, 0, kv, [0, 1], [100, 101])
    print("child: done")
    sys.exit(0)  # runs the exit handlers, which close every writer and loader
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
open_cycle.abort(0)
stalled.release.set()
inside.wait_all_done(timeout=60)
with writer.cycle(timeout=30):
    kvdump.write_cache_store(writer, 0, kv, [0, 1], [200, 201])
assert kvdump.lookup(store, [200, 201]) == 2
print("parent: done")
"""


def test_a_forked_child_refuses_the_parents_writer_and_exits() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "child: done" in done.stdout and "parent: done" in done.stdout
