"""The ``kvdump`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    for f in dataclasses.fields(cls):
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        parser.add_argument(
            *flags,
            dest=f.name,
            type=f.metadata.get("type", type(f.default)),
            default=f.default,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata.get('help', '')} (default {f.metadata.get('default_text', f.default)})".strip(),
        )


def _add_console_flags(parser: argparse.ArgumentParser) -> None:
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "--quiet", action="store_true", help="only warnings and errors on stderr: no progress lines or bars"
    )
    loudness.add_argument("-v", "--verbose", action="store_true", help="also debug lines on stderr")


def _console_level(args: argparse.Namespace) -> int:
    from kvdump.cli_console import NORMAL, QUIET, VERBOSE

    return QUIET if args.quiet else VERBOSE if args.verbose else NORMAL


def _demo(args: argparse.Namespace) -> int:
    from kvdump.cli_console import cli_console
    from kvdump.demo import DemoConfig, format_report, report_json, run_demo

    cfg = DemoConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)})
    with cli_console(_console_level(args)):
        report = run_demo(cfg)
    if args.json:
        json.dump(report_json(report), sys.stdout, indent=2)
        print()
    else:
        print(format_report(report))
    return 0 if report.tokens_match else 1


def _add_role_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PD.TOML", help="the PD config both roles read")
    parser.add_argument("--tp-rank", type=int, metavar="N", help="override parallel.tp_rank of the config")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set writer.num_threads=4 (repeatable)",
    )
    prompts = parser.add_argument_group("prompts (the same flags on both roles give the same token ids)")
    prompts.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="a prompt; UTF-8 bytes modulo the vocabulary become its token ids (repeatable)",
    )
    prompts.add_argument("--random-prompts", type=int, default=0, metavar="N", help="add N random prompts")
    prompts.add_argument(
        "--prompt-len", type=int, default=64, metavar="L", help="tokens per random prompt (default 64)"
    )
    prompts.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the random prompts (the weights' seed is model.seed in the config)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    _add_console_flags(parser)


def _run_role(args: argparse.Namespace) -> int:
    from kvdump import pd
    from kvdump.cli_console import cli_console
    from kvdump.config import ConfigError, load_config, parse_override
    from kvdump.errors import KvdumpError
    from kvdump.pd.wiring import llama_config

    role = args.command
    try:
        overrides = dict(parse_override(assignment) for assignment in args.set)
        if args.tp_rank is not None:
            overrides["parallel.tp_rank"] = args.tp_rank
        config = load_config(args.config, overrides)
        vocab_size = llama_config(config.model).vocab_size
        requests = pd.make_requests(args.prompt, args.random_prompts, args.prompt_len, args.seed, vocab_size)
        with cli_console(_console_level(args)):
            if role == "prefill":
                report: pd.PrefillReport | pd.DecodeReport = pd.run_prefill(config, requests)
                text, ok = pd.format_prefill(report), report.ok
            else:
                report = pd.run_decode(config, requests, args.max_new_tokens, verify=args.verify)
                text, ok = pd.format_decode(report), report.ok
    except (ConfigError, pd.RequestError) as error:
        # A usage problem: one line, the conventional exit code 2, no traceback to scroll past.
        print(f"kvdump {role}: {error}", file=sys.stderr)
        return 2
    except KvdumpError as error:
        print(f"kvdump {role}: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(pd.report_json(report), sys.stdout, indent=2)
        print()
    else:
        print(text)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kvdump", description="Asynchronous KV-cache writer for PD-disaggregated serving"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="prefill → MemoryStore → decode end to end, with timings")
    from kvdump.demo import DemoConfig

    _add_dataclass_flags(demo, DemoConfig)
    demo.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    _add_console_flags(demo)
    demo.set_defaults(func=_demo)

    prefill = sub.add_parser("prefill", help="PD prefill role: compute prompts' KV and publish it to the store")
    _add_role_flags(prefill)
    prefill.set_defaults(func=_run_role)

    decode = sub.add_parser("decode", help="PD decode role: load committed KV, recompute the rest, generate")
    _add_role_flags(decode)
    decode.add_argument("--max-new-tokens", type=int, default=16, metavar="N", help="tokens to generate (default 16)")
    decode.add_argument(
        "--verify",
        action="store_true",
        help="also recompute every request from scratch locally; exit 1 if any token differs",
    )
    decode.set_defaults(func=_run_role)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
