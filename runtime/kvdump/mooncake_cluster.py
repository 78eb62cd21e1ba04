"""A local Mooncake Store cluster on 127.0.0.1 for single-machine trials, tests and benchmarks.

``LocalMooncakeCluster`` starts the ``mooncake_master`` that Mooncake's wheel installs (with its HTTP
metadata server) and, when asked for storage, one ``mooncake_client`` storage service that
contributes that much memory. Clients that contribute no memory themselves
(``global_segment_size=0``) can then write and exit while their data stays in the cluster, which is
what a prefill process needs. Everything is stopped by PID; each cluster gets fresh ports unless
told otherwise. ``python -m kvdump.mooncake_cluster`` runs one in the foreground and prints the
store URL to use."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

from kvdump.errors import StoreError, UnsupportedError
from kvdump.stores.mooncake import INSTALL_HINT


def find_mooncake_binary(name: str) -> str:
    """A Mooncake executable (``mooncake_master``, ``mooncake_client``) next to this interpreter, or
    on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise UnsupportedError(f"{name} not found: {INSTALL_HINT}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _spawn(args: list[str], log_path: Path | None) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        if log is not subprocess.DEVNULL:
            log.close()


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


class LocalMooncakeCluster:
    """A ``mooncake_master`` (and, with ``storage_bytes > 0``, one ``mooncake_client`` storage
    service) on 127.0.0.1, started by ``start()`` (or ``with``) and stopped by PID in ``stop()``.
    Logs go to files in ``log_dir``. Not thread-safe."""

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        storage_bytes: int = 0,
        rpc_port: int | None = None,
        metadata_port: int | None = None,
        master_args: tuple[str, ...] = (),
    ) -> None:
        self.rpc_port = rpc_port or free_port()
        self.metadata_port = metadata_port or free_port()
        self.metrics_port = free_port()
        self.storage_port = free_port()
        self.storage_bytes = storage_bytes
        self.log_dir = Path(log_dir) if log_dir else None
        self.master_args = master_args
        self.master_process: subprocess.Popen[bytes] | None = None
        self.storage_process: subprocess.Popen[bytes] | None = None

    @property
    def master(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def metadata_server(self) -> str:
        return f"http://127.0.0.1:{self.metadata_port}/metadata"

    def url(self, **options: int | str) -> str:
        """The ``mooncake://`` store URL for ``kvdump.open_store``."""
        query = "&".join([f"metadata_server={self.metadata_server}"] + [f"{k}={v}" for k, v in options.items()])
        return f"mooncake://{self.master}?{query}"

    def _log(self, name: str) -> Path | None:
        if self.log_dir is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / name

    def _wait_listening(self, process: subprocess.Popen[bytes], ports: list[int], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(_accepts(p) for p in ports):
            if process.poll() is not None:
                self.stop()
                raise StoreError(f"{what} exited with code {process.returncode}; logs in {self.log_dir}")
            if time.monotonic() > deadline:
                self.stop()
                raise StoreError(f"{what} did not listen on {ports} within {timeout:.0f} s; logs in {self.log_dir}")
            time.sleep(0.05)

    def start(self, timeout: float = 30.0) -> LocalMooncakeCluster:
        try:
            self._start(timeout)
        except BaseException:  # a signal or a missing binary half-way must not orphan the master
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.master_process = _spawn(
            [
                find_mooncake_binary("mooncake_master"),
                "--rpc_address=127.0.0.1",
                f"--rpc_port={self.rpc_port}",
                "--enable_http_metadata_server=true",
                "--http_metadata_server_host=127.0.0.1",
                f"--http_metadata_server_port={self.metadata_port}",
                "--metrics_host=127.0.0.1",
                f"--metrics_port={self.metrics_port}",
                *self.master_args,
            ],
            self._log("master.log"),
        )
        self._wait_listening(self.master_process, [self.rpc_port, self.metadata_port], "mooncake_master", timeout)
        if self.storage_bytes > 0:
            self.storage_process = _spawn(
                [
                    find_mooncake_binary("mooncake_client"),
                    f"--master_server_address={self.master}",
                    f"--metadata_server={self.metadata_server}",
                    f"--global_segment_size={self.storage_bytes}",
                    "--local_buffer_size=16MB",
                    "--host=127.0.0.1",
                    f"--port={self.storage_port}",
                    "--protocol=tcp",
                ],
                self._log("storage.log"),
            )
            self._wait_listening(self.storage_process, [self.storage_port], "mooncake_client", timeout)

    def stop(self) -> None:
        _stop(self.storage_process)
        _stop(self.master_process)

    def __enter__(self) -> LocalMooncakeCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a local Mooncake Store cluster (master + storage service) and print its kvdump store URL"
    )
    parser.add_argument("--log-dir", default=None, help="directory for the processes' logs (default: discard)")
    parser.add_argument(
        "--storage-bytes", type=int, default=1 << 30, help="memory the storage service contributes (0: none)"
    )
    parser.add_argument("--rpc-port", type=int, default=50051, help="master RPC port (0: any free port)")
    parser.add_argument("--metadata-port", type=int, default=8080, help="HTTP metadata port (0: any free port)")
    args = parser.parse_args(argv)
    cluster = LocalMooncakeCluster(
        args.log_dir,
        storage_bytes=args.storage_bytes,
        rpc_port=args.rpc_port or None,
        metadata_port=args.metadata_port or None,
    )
    # `kill` (SIGTERM) must stop the cluster too, not orphan it: turn it into a normal exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with cluster:
        print(cluster.url(global_segment_size=0), flush=True)
        pids = [p.pid for p in (cluster.master_process, cluster.storage_process) if p is not None]
        print(f"Mooncake cluster running (PIDs {pids}); Ctrl-C stops it", file=sys.stderr, flush=True)
        try:
            while cluster.master_process is not None and cluster.master_process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
