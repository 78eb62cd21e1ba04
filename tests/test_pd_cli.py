"""The two PD roles as the CLI runs them: prefill and decode in separate processes over a FileStore
and over Mooncake, a decode that finds nothing, a prefill killed mid-write, stores that die with the
process refused, and the in-process paths (TP key spaces, prefix hits, corrupted blocks, a failed
verification, a prefill whose store fails some or all requests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import kvdump
import kvdump.pd
import kvdump.pd.wiring
from kvdump import cli
from kvdump.config import load_config
from kvdump.hashing import block_hashes
from kvdump.pd import make_requests
from kvdump.pd.wiring import hash_salt, llama_config
from kvdump.testing import FailingStore

REPO = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 16
TEXT = "kvdump moves KV-cache writes off the forward loop."
PROMPTS = ["--prompt", TEXT, "--random-prompts", "2", "--prompt-len", "48", "--seed", "3"]
PROMPT_LENGTHS = [len(TEXT.encode()), 48, 48]  # 48: ends on a block boundary

PROMPT_FLAGS = {"texts": [TEXT], "random_count": 2, "random_length": 48, "seed": 3}


def store_keys(config_path: Path) -> tuple[list[str], list[str]]:
    """The block record keys and the commit keys a complete prefill of PROMPTS writes, computed here
    from the config the way any reader would, independently of how the store lays out its files."""
    config = load_config(config_path)
    model = llama_config(config.model)
    ns = config.model.namespace
    blocks: list[str] = []
    commits: list[str] = []
    for request in make_requests(vocab_size=model.vocab_size, **PROMPT_FLAGS):
        full = len(request.tokens) // BLOCK_SIZE
        for h in block_hashes(list(request.tokens[: full * BLOCK_SIZE]), BLOCK_SIZE, hash_salt(config)):
            commits.append(kvdump.KeySpace(ns).commit_key(h))
            blocks += [kvdump.KeySpace(ns).block_key(h, layer) for layer in range(model.num_layers)]
    return blocks, commits


def write_config(tmp_path: Path, url: str, *, num_threads: int = 2, options: str = "") -> Path:
    path = tmp_path / "pd.toml"
    path.write_text(
        textwrap.dedent(f"""
        [model]
        namespace = "pd-test"
        preset = "tiny"
        seed = 5

        [store]
        url = "{url}"
        {options}

        [writer]
        num_threads = {num_threads}

        [cache]
        block_size = {BLOCK_SIZE}

        [timeouts]
        write_wait = 60.0
        load_wait = 60.0
    """)
    )
    return path


def run_kvdump(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvdump.cli", *args], capture_output=True, text=True, timeout=180, env=env, check=False
    )


def main_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = cli.main([*args, "--json", "--quiet"])
    return code, json.loads(capsys.readouterr().out)


def test_prefill_then_decode_in_separate_processes(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    config = str(write_config(tmp_path, f"file://{root}"))

    # Nothing stored yet: decode reports a miss for every request and recomputes them.
    cold = run_kvdump("decode", "--config", config, *PROMPTS, "--max-new-tokens", "6", "--verify", "--json")
    assert cold.returncode == 0, cold.stderr
    cold_report = json.loads(cold.stdout)
    assert [r["hit"] for r in cold_report["requests"]] == ["miss"] * 3
    assert [r["committed_blocks"] for r in cold_report["requests"]] == [0, 0, 0]
    assert [r["recomputed_tokens"] for r in cold_report["requests"]] == PROMPT_LENGTHS
    assert all(r["tokens_match"] for r in cold_report["requests"])
    assert "MISS: no committed blocks" in cold.stderr

    prefill = run_kvdump("prefill", "--config", config, *PROMPTS, "--json")
    assert prefill.returncode == 0, prefill.stderr
    written = json.loads(prefill.stdout)
    full_blocks = [n // BLOCK_SIZE for n in PROMPT_LENGTHS]
    assert [r["full_blocks"] for r in written["requests"]] == full_blocks
    assert written["totals"]["blocks_written"] == sum(full_blocks)
    block_keys, commit_keys = store_keys(Path(config))
    store = kvdump.FileStore(str(root))
    assert len(block_keys) == sum(full_blocks) * written["model"]["layers"]
    assert all(store.exists(key) for key in block_keys + commit_keys)

    warm = run_kvdump("decode", "--config", config, *PROMPTS, "--max-new-tokens", "6", "--verify", "--json")
    assert warm.returncode == 0, warm.stderr
    report = json.loads(warm.stdout)
    assert report["ok"] is True
    assert report["totals"]["full_hits"] == 3
    for request, n, blocks in zip(report["requests"], PROMPT_LENGTHS, full_blocks):
        assert request["hit"] == "full"
        assert request["committed_blocks"] == blocks
        assert request["loaded_blocks"] == blocks
        # Only the tail after the last full block is recomputed, and always the last prompt token
        # (its logits are not stored), also when the prompt ends on a block boundary.
        assert request["recomputed_tokens"] == max(n - blocks * BLOCK_SIZE, 1)
        assert request["load_error"] is None
        assert request["tokens_match"] is True
    # Loaded KV and recomputed KV lead to the same tokens, across three processes.
    assert [r["generated"] for r in report["requests"]] == [r["generated"] for r in cold_report["requests"]]


STALLING_STORE_PLUGIN = '''
import os
import threading
from urllib.parse import urlparse

import kvdump


class StallingFileStore(kvdump.PythonStore):
    """stallfile:///root: a FileStore that stores the first batch of blocks it is given, then, at
    the start of the second, creates root/stalled and blocks until the process is killed (bounded,
    so a test that never kills it still ends)."""

    def __init__(self, root):
        super().__init__("stallfile")
        self.root = root
        self.inner = kvdump.FileStore(root)
        self.lock = threading.Lock()
        self.batches = 0

    def batch_put(self, keys, values):
        with self.lock:
            self.batches += 1
            stall = self.batches > 1
        if stall:
            open(os.path.join(self.root, "stalled"), "w").close()
            threading.Event().wait(300)
            raise TimeoutError("stallfile: nobody killed this process")
        kvdump.CacheStore.batch_put(self.inner, list(keys), [bytes(v) for v in values])

    def put(self, key, value):
        self.batch_put([key], [value])

    def get(self, key):
        return kvdump.CacheStore.get(self.inner, key)

    def exists(self, key):
        return kvdump.CacheStore.exists(self.inner, key)

    def remove(self, key):
        return kvdump.CacheStore.remove(self.inner, key)


def open_stalling_file_store(url):
    return StallingFileStore(urlparse(url).path)


def open_scratch_store(url):
    """scratch://: a MemoryStore under another name, declaring that its data dies with the process."""
    return kvdump.MemoryStore()


open_scratch_store.in_process = True
'''


def install_test_plugins(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python finds the ``stallfile://`` and ``scratch://`` store plug-ins
    through the ``kvdump.stores`` entry point group, the way an installed package would register
    them."""
    site = tmp_path / "plugin-site"
    dist_info = site / "kvdump_test_stores-0.dist-info"
    dist_info.mkdir(parents=True)
    (site / "kvdump_test_stores.py").write_text(STALLING_STORE_PLUGIN)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: kvdump-test-stores\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(
        "[kvdump.stores]\n"
        "stallfile = kvdump_test_stores:open_stalling_file_store\n"
        "scratch = kvdump_test_stores:open_scratch_store\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return env


def test_prefill_killed_mid_write_publishes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    root.mkdir()
    env = install_test_plugins(tmp_path)
    # The store takes the first batch (layer 0 of req-0) and stalls in the second, so the kill lands
    # after some blocks are stored and before any commit could be, however slow the machine.
    config = str(write_config(tmp_path, f"stallfile://{root}", num_threads=1))
    block_keys, commit_keys = store_keys(Path(config))
    store = kvdump.FileStore(str(root))
    prefill = subprocess.Popen(
        [sys.executable, "-m", "kvdump.cli", "prefill", "--config", config, *PROMPTS, "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # bounds a broken prefill; the kill itself waits on the marker
        while not (root / "stalled").exists():
            assert prefill.poll() is None, f"prefill exited before it stalled: {prefill.stderr.read()}"
            assert time.monotonic() < deadline, "prefill did not reach its second batch of blocks within 120 s"
            time.sleep(0.01)
        prefill.send_signal(signal.SIGKILL)
    finally:
        prefill.kill()
        prefill.wait(60)
        prefill.stderr.close()
    assert prefill.returncode == -signal.SIGKILL
    stored = [key for key in block_keys if store.exists(key)]
    assert 0 < len(stored) < len(block_keys), "the kill must land after some blocks and before the last"
    assert not any(store.exists(key) for key in commit_keys), "a commit record exists"

    decode = run_kvdump(
        "decode", "--config", config, "--set", f"store.url=file://{root}",
        *PROMPTS, "--max-new-tokens", "4", "--verify", "--json",
    )  # fmt: skip
    assert decode.returncode == 0, decode.stderr
    report = json.loads(decode.stdout)
    assert [r["committed_blocks"] for r in report["requests"]] == [0, 0, 0]
    assert [r["loaded_blocks"] for r in report["requests"]] == [0, 0, 0]
    assert [r["hit"] for r in report["requests"]] == ["miss"] * 3
    assert all(r["tokens_match"] for r in report["requests"])


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_a_store_that_dies_with_the_process_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the role did work before refusing the store")

    monkeypatch.setattr(kvdump.pd.wiring, "build_model", no_work)
    monkeypatch.setattr(kvdump.pd.wiring, "open_store", no_work)
    config = write_config(tmp_path, "memory://?capacity_bytes=1048576")
    extra = ["--max-new-tokens", "2"] if role == "decode" else []
    assert cli.main([role, "--config", str(config), *PROMPTS, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1  # one line, no traceback
    assert captured.err.startswith(f"kvdump {role}: {config}: store.url: expected a store that outlives this process")
    assert "use file:///path or mooncake://host:port" in captured.err


def test_a_plugin_that_declares_itself_in_process_is_refused(tmp_path: Path) -> None:
    env = install_test_plugins(tmp_path)
    config = str(write_config(tmp_path, "scratch://"))
    for role in ("prefill", "decode"):
        done = run_kvdump(role, "--config", config, *PROMPTS, env=env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "store.url: expected a store that outlives this process, got 'scratch://'" in done.stderr


def test_tp_rank_selects_the_key_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, f"file://{tmp_path}/kv"))
    tp = ["--set", "parallel.tp_size=2"]
    code, written = main_json(capsys, "prefill", "--config", config, *tp, "--tp-rank", "1", *PROMPTS)
    assert code == 0
    assert (written["tp_rank"], written["tp_size"]) == (1, 2)

    code, other_rank = main_json(
        capsys, "decode", "--config", config, *tp, "--tp-rank", "0", *PROMPTS, "--max-new-tokens", "2"
    )
    assert code == 0
    assert [r["hit"] for r in other_rank["requests"]] == ["miss"] * 3

    code, same_rank = main_json(
        capsys, "decode", "--config", config, *tp, "--tp-rank", "1", *PROMPTS, "--max-new-tokens", "2"
    )
    assert code == 0
    assert [r["hit"] for r in same_rank["requests"]] == ["full"] * 3
    assert [r["generated"] for r in same_rank["requests"]] == [r["generated"] for r in other_rank["requests"]]


def test_longer_prompt_loads_the_shared_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, f"file://{tmp_path}/kv"))
    prefix = "A system prompt that several requests share, word for word."  # 59 bytes: 3 full blocks
    code, _ = main_json(capsys, "prefill", "--config", config, "--prompt", prefix)
    assert code == 0
    longer = prefix + " Then each request asks its own question."
    code, report = main_json(
        capsys, "decode", "--config", config, "--prompt", longer, "--max-new-tokens", "5", "--verify"
    )
    assert code == 0
    (request,) = report["requests"]
    assert request["hit"] == "partial"
    assert request["full_blocks"] == len(longer.encode()) // BLOCK_SIZE
    assert request["committed_blocks"] == request["loaded_blocks"] == len(prefix.encode()) // BLOCK_SIZE
    assert request["tokens_match"] is True


def test_corrupted_block_is_reported_and_recomputed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "kv"
    config = str(write_config(tmp_path, f"file://{root}"))
    code, _ = main_json(capsys, "prefill", "--config", config, *PROMPTS)
    assert code == 0
    store = kvdump.FileStore(str(root))
    victim = store_keys(Path(config))[0][0]  # layer 0 of req-0's first block
    record = bytearray(store.get(victim))
    record[-1] ^= 0xFF  # the last payload byte: the header still parses, the checksum no longer holds
    store.put(victim, bytes(record))

    code, report = main_json(capsys, "decode", "--config", config, *PROMPTS, "--max-new-tokens", "4", "--verify")
    assert code == 0
    damaged, *intact = report["requests"]
    assert damaged["committed_blocks"] == PROMPT_LENGTHS[0] // BLOCK_SIZE
    assert damaged["loaded_blocks"] == 0
    assert damaged["recomputed_tokens"] == PROMPT_LENGTHS[0]
    assert "CHECKSUM_MISMATCH" in damaged["load_error"]
    assert victim in damaged["load_error"]  # the error names the bad key
    assert [r["load_error"] for r in intact] == [None, None]
    assert [r["hit"] for r in intact] == ["full", "full"]
    assert all(r["tokens_match"] for r in report["requests"])
    assert report["totals"]["load_errors"] == 1


def test_verify_mismatch_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write_config(tmp_path, f"file://{tmp_path}/kv"))
    real = kvdump.pd.decode.generate_greedy

    def off_by_one(*args: Any, **kwargs: Any) -> list[list[int]]:
        return [[t + 1 for t in tokens] for tokens in real(*args, **kwargs)]

    monkeypatch.setattr(kvdump.pd.decode, "generate_greedy", off_by_one)
    code, report = main_json(
        capsys,
        "decode",
        "--config",
        config,
        "--random-prompts",
        "1",
        "--prompt-len",
        "20",
        "--max-new-tokens",
        "3",
        "--verify",
    )
    assert code == 1
    assert report["ok"] is False
    assert report["requests"][0]["tokens_match"] is False
    assert report["totals"]["tokens_match"] is False


def request_block_keys(config_path: Path) -> dict[str, set[str]]:
    """Each request of PROMPTS with the record keys of its full blocks at every layer."""
    config = load_config(config_path)
    model = llama_config(config.model)
    keys: dict[str, set[str]] = {}
    for request in make_requests(vocab_size=model.vocab_size, **PROMPT_FLAGS):
        full = len(request.tokens) // BLOCK_SIZE
        chain = block_hashes(list(request.tokens[: full * BLOCK_SIZE]), BLOCK_SIZE, hash_salt(config))
        keys[request.name] = {
            kvdump.KeySpace(config.model.namespace).block_key(h, layer)
            for h in chain
            for layer in range(model.num_layers)
        }
    return keys


def fail_puts_in(monkeypatch: pytest.MonkeyPatch, root: Path, refused: set[str]) -> FailingStore:
    """Make the prefill's store (a FileStore at ``root``) refuse the puts of ``refused``."""
    store = FailingStore(kvdump.FileStore(str(root)), lambda key: key in refused)
    monkeypatch.setattr(kvdump.pd.wiring, "open_store", lambda config: store)
    return store


def test_prefill_reports_a_failed_request_and_stores_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "kv"
    config = write_config(tmp_path, f"file://{root}")
    keys = request_block_keys(config)
    refused = sorted(keys["req-1"])[:1]  # one record of req-1: the whole request stays uncommitted
    store = fail_puts_in(monkeypatch, root, set(refused))

    assert cli.main(["prefill", "--config", str(config), *PROMPTS]) == 0
    captured = capsys.readouterr()
    assert store.refused == refused
    # The report on stdout names every request's outcome, the failed one with its code and key.
    lines = captured.out.splitlines()
    assert "  requests        3: 2 stored, 1 failed" in lines
    assert f"  req-1    failed   STORE_FULL (key {refused[0]}): nothing committed" in lines
    assert [line.split()[:2] for line in lines if line.startswith("  req-")] == [
        ["req-0", "stored"], ["req-1", "failed"], ["req-2", "stored"],
    ]  # fmt: skip
    # The progress on stderr says the same as each request finishes, and the run went on after it.
    progress = [line for line in captured.err.splitlines() if line.startswith("prefill req-")]
    assert len(progress) == 3
    assert "FAILED STORE_FULL" in progress[1] and "continuing" in progress[1]
    assert progress[2].endswith("committed")
    assert "kvdump save failed" not in captured.err  # the save policy's record of it is not repeated

    monkeypatch.undo()
    code, report = main_json(capsys, "decode", "--config", str(config), *PROMPTS, "--max-new-tokens", "2")
    assert code == 0
    full_blocks = [n // BLOCK_SIZE for n in PROMPT_LENGTHS]
    assert [r["committed_blocks"] for r in report["requests"]] == [full_blocks[0], 0, full_blocks[2]]


def test_prefill_exits_1_when_nothing_could_be_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "kv"
    config = write_config(tmp_path, f"file://{root}")
    every_record = set().union(*request_block_keys(config).values())
    store = fail_puts_in(monkeypatch, root, every_record)

    code, report = main_json(capsys, "prefill", "--config", str(config), *PROMPTS)
    assert code == 1
    assert report["ok"] is False
    assert store.refused  # every request reached the store: none was skipped after the first failure
    assert [r["outcome"] for r in report["requests"]] == ["failed"] * 3
    assert all(r["error_code"] == "STORE_FULL" and r["error_key"] in every_record for r in report["requests"])
    assert [r["committed_blocks"] for r in report["requests"]] == [0, 0, 0]
    totals = report["totals"]
    assert (totals["stored_requests"], totals["failed_requests"], totals["blocks_written"]) == (0, 3, 0)
    assert totals["save_failures_reported"] == 3
    assert not any(kvdump.FileStore(str(root)).exists(key) for key in store_keys(config)[1])  # no commit record


def test_same_flags_give_the_same_token_ids() -> None:
    first = kvdump.pd.make_requests(["héllo"], 2, 30, 9, 128)
    again = kvdump.pd.make_requests(["héllo"], 2, 30, 9, 128)
    assert first == again
    assert first[0].tokens == tuple(b % 128 for b in "héllo".encode())
    assert kvdump.pd.make_requests([], 2, 30, 10, 128) != kvdump.pd.make_requests([], 2, 30, 9, 128)
    assert [r.name for r in first] == ["req-0", "req-1", "req-2"]
    with pytest.raises(kvdump.pd.RequestError, match="prompt 0 is empty"):
        kvdump.pd.make_requests([""], 0, 0, 0, 128)


def test_mooncake_example_runs_prefill_then_decode(mooncake_cluster: Any) -> None:
    """The example's Mooncake settings, pointed at this session's local cluster: blocks the prefill
    process stores outlive it (it lends no memory of its own), so a later decode process hits."""
    example = REPO / "examples/mooncake/pd.toml"
    query = load_config(example).store.resolved_url.split("?", 1)[1]
    query = query.replace("http://127.0.0.1:8080/metadata", mooncake_cluster.metadata_server)
    assert "global_segment_size=0" in query
    common = [
        "--config", str(example),
        "--set", f"store.url=mooncake://{mooncake_cluster.master}?{query}",
        "--set", f"model.namespace=pd-mooncake-{uuid.uuid4().hex}",  # apart from other tests' keys
        *PROMPTS, "--json", "--quiet",
    ]  # fmt: skip
    prefill = run_kvdump("prefill", *common)
    assert prefill.returncode == 0, prefill.stderr
    decode = run_kvdump("decode", *common, "--max-new-tokens", "4", "--verify")
    assert decode.returncode == 0, decode.stderr
    report = json.loads(decode.stdout)
    assert [r["hit"] for r in report["requests"]] == ["full"] * 3
    assert [r["loaded_blocks"] for r in report["requests"]] == [n // BLOCK_SIZE for n in PROMPT_LENGTHS]
    assert all(r["tokens_match"] for r in report["requests"])
