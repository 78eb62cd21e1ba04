"""The ``kvdump`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        if f.name == "dtype":
            parser.add_argument(flag, default=f.default, choices=["float32", "bfloat16", "float16"])
        else:
            parser.add_argument(flag, type=kind, default=f.default, help=f"(default {f.default})")


def _demo(args: argparse.Namespace) -> int:
    from kvdump.demo import DemoConfig, format_report, report_json, run_demo

    cfg = DemoConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)})
    progress = (lambda _line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    report = run_demo(cfg, progress=progress)
    if args.json:
        json.dump(report_json(report), sys.stdout, indent=2)
        print()
    else:
        print(format_report(report))
    return 0 if report.tokens_match else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvdump", description="Asynchronous KV-cache writer for PD-disaggregated serving")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="prefill → MemoryStore → decode end to end, with timings")
    from kvdump.demo import DemoConfig

    _add_dataclass_flags(demo, DemoConfig)
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
