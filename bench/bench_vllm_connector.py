"""What the vLLM connector costs on top of kvdump's own ops, and what its scheduler-side lookup costs.

Save and load bandwidth of one forward's worth of blocks (``--layers`` x ``--blocks``, FlashAttention
layout, float32) through ``KvdumpConnector`` (bind metadata, ``save_kv_layer`` per layer,
``wait_for_save``; ``start_load_kv``, ``wait_for_layer_load`` per layer) against kvdump's ops on the
same blocks (``write_cache_store`` per layer + ``wait_all_done``; ``KVLoader.load_async`` +
``wait_layer``), interleaved round by round in one run, into one in-process MemoryStore. Each save
round writes fresh keys.

The scheduler side: ``get_num_new_matched_tokens`` on requests whose ``--prompt-tokens`` prompt is
committed, first call and again, in µs, and the prompt's hash chain, which the connector computes
once when vLLM adds the request. vLLM's
real scheduler, KV cache config and connector factory build the connectors (vLLM 0.32.0 installed by
scripts/install_vllm.sh).

    python bench/bench_vllm_connector.py --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # before vLLM is imported: this machine has no GPU

from vllm.v1.request import RequestStatus  # noqa: E402

import kvdump  # noqa: E402
from kvdump.integrations.vllm import BlockRun, KvdumpConnectorMetadata  # noqa: E402
from kvdump.integrations.vllm.shared_stores import provide_store  # noqa: E402
from kvdump.testing.vllm_harness import VllmEngine  # noqa: E402
from timing import interleaved, machine_info, median  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8, help="layers per forward (default 8)")
    p.add_argument("--blocks", type=int, default=96, help="blocks saved and loaded per layer (default 96)")
    p.add_argument("--kv-heads", type=int, default=8, help="KV heads (default 8)")
    p.add_argument("--head-size", type=int, default=128, help="head size (default 128)")
    p.add_argument("--threads", type=int, default=2, help="writer and loader threads (default 2)")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds of each variant (default 9)")
    p.add_argument("--requests", type=int, default=200, help="requests timed for the lookup (default 200)")
    p.add_argument("--prompt-tokens", type=int, default=2048, help="prompt length for the lookup (default 2048)")
    p.add_argument("--out", type=Path, default=Path("bench/results/vllm_connector.json"), help="JSON results")
    return p.parse_args()


def measure_lookups(engine: VllmEngine, prompt: list[int], requests: int, block_size: int) -> dict[str, float]:
    """Commit ``prompt`` through the connector's own save, then time get_num_new_matched_tokens for
    ``requests`` new requests with that prompt (first call and again), in µs."""
    engine.add("committed", prompt)
    engine.run()
    first, again = [], []
    expected = (len(prompt) // block_size - 1) * block_size
    for i in range(requests):
        request = engine.add(f"q{i}", prompt)
        started = time.perf_counter()
        matched, _ = engine.connector.get_num_new_matched_tokens(request, 0)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        engine.connector.get_num_new_matched_tokens(request, 0)
        again.append(time.perf_counter() - started)
        if matched != expected:
            raise RuntimeError(f"the committed prompt matched {matched} tokens, expected {expected}")
        engine.scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    return {"first_us": 1e6 * median(first), "again_us": 1e6 * median(again)}


def main() -> int:
    args = parse_args()
    block_size = 16
    num_blocks = 2 * args.blocks + 2
    url = f"memory://bench-{uuid.uuid4().hex}"
    store = kvdump.MemoryStore(capacity_bytes=2 << 30)
    provide_store(url, store)
    namespace = "vllm-bench"
    tmp = Path(tempfile.mkdtemp(prefix="kvdump-bench-vllm-"))
    engine = VllmEngine(
        tmp,
        {"store_url": url, "namespace": namespace, "num_threads": args.threads},
        layers=args.layers,
        kv_heads=args.kv_heads,
        head_size=args.head_size,
        num_blocks=num_blocks,
    )
    worker = engine.workers[0]
    connector = worker.connector
    for cache in worker.caches.values():
        cache.normal_()
    names = engine.layer_names
    src_ids = list(range(1, args.blocks + 1))
    dst_ids = list(range(args.blocks + 1, 2 * args.blocks + 1))
    writer = kvdump.AsyncWriter(store, num_threads=args.threads, key_space=kvdump.KeySpace(namespace), worker_nice=0)
    loader = kvdump.KVLoader(store, num_threads=args.threads, key_space=kvdump.KeySpace(namespace), worker_nice=0)
    counter = iter(range(1, 1 << 62))
    last_saved: dict[str, list[int]] = {}

    def fresh_hashes() -> list[int]:
        base = next(counter) * 1_000_003
        return [base + i for i in range(args.blocks)]

    def connector_save() -> None:
        hashes = fresh_hashes()
        connector.bind_connector_metadata(KvdumpConnectorMetadata(saves=[BlockRun("r", src_ids, hashes)]))
        for name in names:
            connector.save_kv_layer(name, worker.caches[name], None)
        connector.wait_for_save()
        connector.clear_connector_metadata()
        last_saved["connector"] = hashes

    def ops_save() -> None:
        hashes = fresh_hashes()
        run = BlockRun("r", src_ids, hashes)
        ids, hash_tensor = run.tensors()
        writer.init()
        for layer, name in enumerate(names):
            kvdump.write_cache_store(writer, layer, worker.caches[name], ids, hash_tensor, request="r")
        writer.wait_all_done()
        last_saved["ops"] = hashes

    def connector_load() -> None:
        meta = KvdumpConnectorMetadata(loads=[BlockRun("r", dst_ids, last_saved["connector"])])
        connector.bind_connector_metadata(meta)
        connector.start_load_kv(None)
        for name in names:
            connector.wait_for_layer_load(name)
        connector.wait_for_save()
        connector.clear_connector_metadata()
        if connector.get_block_ids_with_load_errors():
            raise RuntimeError("the connector reported load errors")

    def ops_load() -> None:
        ids, hashes = BlockRun("r", dst_ids, last_saved["ops"]).tensors()
        loader.start()
        for layer, name in enumerate(names):
            loader.load_async(layer, worker.caches[name], ids, hashes)
        for layer in range(len(names)):
            loader.wait_layer(layer)
        loader.finish()

    payload = args.blocks * args.layers * 2 * block_size * args.kv_heads * args.head_size * 4
    connector_save()
    ops_save()
    times = interleaved(
        {
            "connector_save": connector_save,
            "ops_save": ops_save,
            "connector_load": connector_load,
            "ops_load": ops_load,
        },
        args.repeats,
    )
    gbps = {name: payload / median(values) / 1e9 for name, values in times.items()}

    engine.shutdown()
    writer.close()
    loader.close()

    # The scheduler side. A MemoryStore answers inline; a FileStore's lookups run on the thread that
    # bounds them by lookup_timeout, so the second figure includes that hand-over.
    from kvdump.hashing import full_block_hashes, model_salt

    prompt_blocks = args.prompt_tokens // block_size
    prompt = [t % 997 + 1 for t in range(args.prompt_tokens)]
    hashing = []
    for _ in range(args.requests):
        started = time.perf_counter()
        full_block_hashes(prompt, block_size, model_salt("bench-model", "float32"))
        hashing.append(time.perf_counter() - started)
    lookups = {}
    for kind, lookup_url in (("memory", url), ("file", f"file://{tmp / 'file-store'}")):
        lookup_engine = VllmEngine(
            tmp / f"lookup-{kind}",
            {"store_url": lookup_url, "namespace": namespace},
            num_blocks=prompt_blocks + 8,
            max_num_batched_tokens=args.prompt_tokens + 16,
        )
        lookups[kind] = measure_lookups(lookup_engine, prompt, args.requests, block_size)
        lookup_engine.shutdown()

    results = {
        "machine": machine_info(),
        "config": vars(args) | {"out": str(args.out), "payload_bytes": payload},
        "gb_per_s": gbps,
        "save_connector_vs_ops": gbps["connector_save"] / gbps["ops_save"],
        "load_connector_vs_ops": gbps["connector_load"] / gbps["ops_load"],
        "prompt_chain_us_median": 1e6 * median(hashing),
        "lookup_us_median": lookups,
        "seconds": times,
    }
    print(
        f"vLLM connector vs kvdump ops: {args.layers} layers x {args.blocks} blocks "
        f"({payload / 2**20:.1f} MiB per forward), {args.threads} threads, {args.repeats} rounds interleaved"
    )
    for name in ("connector_save", "ops_save", "connector_load", "ops_load"):
        print(f"  {name:15s} {gbps[name]:7.3f} GB/s  (median {1e3 * median(times[name]):8.2f} ms)")
    print(
        f"  save: connector/ops {results['save_connector_vs_ops']:.3f}x; "
        f"load: connector/ops {results['load_connector_vs_ops']:.3f}x"
    )
    for kind, figures in lookups.items():
        print(
            f"  get_num_new_matched_tokens, {args.prompt_tokens}-token prompt ({prompt_blocks} blocks) committed in a "
            f"{kind} store: {figures['first_us']:.1f} µs first call, {figures['again_us']:.1f} µs again "
            f"(median of {args.requests})"
        )
    print(f"  hashing the prompt's chain, once when vLLM adds the request: {1e6 * median(hashing):.1f} µs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
