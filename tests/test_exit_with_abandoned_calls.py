"""The interpreter exits cleanly while a Python store call or task that abort() or close() abandoned
is still inside Python: kvdump's threads stop entering Python at exit, and the exit waits for the
calls inside to come back out instead of letting them take the GIL while the interpreter finalizes
(which on this Python ends the thread mid-call and the process with it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import atexit, threading, time, torch, kvdump
from kvdump.testing import ForwardingStore

entered, release = threading.Event(), threading.Event()

def slow_call():
    entered.set()
    release.wait(30)
    time.sleep(0.3)  # still inside Python when the interpreter starts to exit

class Slow(ForwardingStore):
    def put(self, key, value):
        slow_call()
        return super().put(key, value)

writer = kvdump.AsyncWriter(Slow("slow", kvdump.MemoryStore(capacity_bytes=1 << 24)), num_threads=2)
writer.init()
{calls}
assert entered.wait(30) or {task_only}
writer.{end}(timeout=0)  # abandons the call that is inside Python
# Registered after kvdump's, so run before them: the call comes back out while the interpreter exits.
atexit.register(release.set)
print("exiting")
"""

WRITES = """
for layer in range(3):
    kvdump.write_cache_store(writer, layer, torch.randn(2, 4, 4, 2, 8), [0, 1], [11, 12], request="r")
"""

TASK = """
writer.submit(slow_call, label="slow task")
"""


@pytest.mark.parametrize("end", ["abort", "close"])
@pytest.mark.parametrize("calls", ["store", "task"])
def test_exit_with_an_abandoned_python_call_inside_python_is_clean(calls: str, end: str) -> None:
    script = SCRIPT.format(calls=WRITES if calls == "store" else TASK, task_only=calls == "task", end=end)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exiting" in done.stdout
    assert "terminate called" not in done.stderr and "Fatal Python error" not in done.stderr
