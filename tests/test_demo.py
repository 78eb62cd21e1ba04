"""The main job end to end (README's first command runs it): prompts that share a system prompt are
prefilled with kvdump into a MemoryStore, looked up and loaded into new block ids, and decode
produces the single-process reference's tokens. Both sides are the PD roles' own per-request steps,
and the command line shows progress on stderr through logging, never mixed into the report."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from kvdump import cli
from kvdump.demo import DemoConfig, demo_prompts, format_report, report_json, run_demo


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


def test_demo_decodes_the_reference_tokens_from_the_store(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kvdump")
    handlers = (logging.getLogger().handlers[:], logging.getLogger("kvdump").handlers[:])
    cfg = small()
    report = run_demo(cfg)
    assert report.tokens_match
    assert report.tokens["pd"] == report.tokens["reference"]
    stages = [r.getMessage() for r in caplog.records if r.name == "kvdump.demo"]
    assert len(stages) == 3  # the model, then one line per stage
    assert stages[1].startswith("1/2 prefill") and stages[2].startswith("2/2 decode side")
    assert (logging.getLogger().handlers, logging.getLogger("kvdump").handlers) == handlers  # left to the caller
    # Every layer of the probed forward timed both the op and the tiny add at the same point.
    assert report.write["call_in_forward_us"] > 0 and report.write["tiny_op_in_forward_us"] > 0
    # Shared prefix blocks are stored once; every prompt's blocks were found and loaded.
    assert report.store["entries"] > 0 and report.store["hits"] > 0 and report.store["misses"] == 0
    assert report.store["eviction"] == "evict"
    text = format_report(report)
    assert "tokens match across all prompts: YES" in text and "policy evict" in text
    assert "a 4-float add at the same point" in text
    json.dumps(report_json(report))


def test_the_demo_stores_and_loads_what_the_pd_roles_do() -> None:
    """Full blocks only, as the prefill role stores them: one record per layer and one commit record
    per distinct block; the decode side loads every prompt's full blocks and recomputes the rest."""
    cfg = small()
    report = run_demo(cfg)
    lengths = [len(p) for p in demo_prompts(cfg)]
    full = [n // cfg.block_size for n in lengths]
    assert report.tokens["prompt_tokens"] == sum(lengths)
    assert 0 < report.tokens["stored_blocks"] < sum(full)  # the system prompt's blocks are shared
    assert report.store["entries"] == report.tokens["stored_blocks"] * (cfg.layers + 1)
    assert report.tokens["loaded_blocks"] == sum(full)
    assert report.tokens["recomputed_tokens"] == sum(max(n - f * cfg.block_size, 1) for n, f in zip(lengths, full))
    assert report.tokens_match


def test_store_latency_stands_in_for_a_remote_store() -> None:
    cfg = small()
    cfg.store_latency_ms = 1.0
    report = run_demo(cfg)
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


def small_flags() -> list[str]:
    defaults = DemoConfig()
    return [
        f"--{f.name.replace('_', '-')}={getattr(small(), f.name)}"
        for f in dataclasses.fields(DemoConfig)
        if getattr(small(), f.name) != getattr(defaults, f.name)
    ]


def test_the_command_prints_the_report_on_stdout_and_progress_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", *small_flags()]) == 0
    captured = capsys.readouterr()
    assert "tokens match across all prompts: YES" in captured.out
    assert "1/2 prefill" not in captured.out
    # Not a terminal: plain lines, one per stage, and no progress bar drawn.
    lines = captured.err.splitlines()
    assert len(lines) == 3 and lines[0].startswith("model: 2 layers")
    assert lines[1].startswith("1/2 prefill") and lines[2].startswith("2/2 decode side")
    assert logging.getLogger("kvdump").handlers == []  # the command undid its logging set-up

    assert cli.main(["demo", *small_flags(), "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tokens_match"] is True
    assert captured.err == ""
