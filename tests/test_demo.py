"""The main job end to end (README's first command runs it): prompts that share a system prompt are
prefilled with kvdump into a MemoryStore, looked up and loaded into new block ids, and decode
produces the single-process reference's tokens."""

from __future__ import annotations

import json

from kvdump.demo import DemoConfig, format_report, report_json, run_demo


def small() -> DemoConfig:
    return DemoConfig(
        layers=2,
        hidden=64,
        heads=4,
        kv_heads=2,
        head_dim=16,
        vocab=128,
        batch=3,
        prompt_min=40,
        prompt_max=70,
        block_size=8,
        new_tokens=4,
        repeats=1,
        store_bytes=8 << 20,
    )


def test_demo_decodes_the_reference_tokens_from_the_store() -> None:
    lines: list[str] = []
    report = run_demo(small(), progress=lines.append)
    assert report.tokens_match
    assert report.tokens["pd"] == report.tokens["reference"]
    assert len(lines) == 3  # the model, then one line per stage
    # Every layer of the probed forward timed both the op and the tiny add at the same point.
    assert report.write["call_in_forward_us"] > 0 and report.write["tiny_op_in_forward_us"] > 0
    # Shared prefix blocks are stored once; every prompt's blocks were found and loaded.
    assert report.store["entries"] > 0 and report.store["hits"] > 0 and report.store["misses"] == 0
    assert report.store["eviction"] == "evict"
    text = format_report(report)
    assert "tokens match across all prompts: YES" in text and "policy evict" in text
    assert "a 4-float add at the same point" in text
    json.dumps(report_json(report))


def test_store_latency_stands_in_for_a_remote_store() -> None:
    cfg = small()
    cfg.store_latency_ms = 1.0
    report = run_demo(cfg, progress=lambda _line: None)
    assert report.tokens_match
    assert report.store_latency_ms == 1.0
    text = format_report(report)
    assert "every put call takes 1 ms" in text
    # Synchronous writes wait for one delayed put per layer inside the forward.
    assert report.forward_ms["synchronous"] >= cfg.layers * cfg.store_latency_ms


def test_store_latency_has_a_short_flag_too() -> None:
    import argparse

    from kvdump.cli import _add_dataclass_flags

    parser = argparse.ArgumentParser()
    _add_dataclass_flags(parser, DemoConfig)
    assert parser.parse_args(["--store-latency", "2"]).store_latency_ms == 2.0
    assert parser.parse_args(["--store-latency-ms", "3.5"]).store_latency_ms == 3.5
    assert parser.parse_args([]).store_latency_ms == 0.0
