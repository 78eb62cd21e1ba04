"""runtime/kvdump/_C.pyi describes the extension that is actually built. mypy's stubtest checks every
name, base and property against the imported module; pybind11 functions carry no inspectable
signature, so their parameters are checked against the stub mypy's stubgen generates from the
extension's own signature lines."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kvdump

pytest.importorskip("mypy", reason="scripts/test.sh installs mypy for the stub checks")

STUB = Path(kvdump.__file__).with_name("_C.pyi")
ALLOWLIST = Path(__file__).with_name("stubtest_allowlist.txt")
TOOLS = Path(sys.executable).parent


def test_stub_and_marker_ship_with_the_package() -> None:
    assert STUB.is_file()
    assert STUB.with_name("py.typed").is_file()


def test_stubtest_finds_the_stub_consistent_with_the_extension() -> None:
    run = subprocess.run(
        [str(TOOLS / "stubtest"), "kvdump._C", "--allowlist", str(ALLOWLIST)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def signatures(stub: Path) -> dict[str, list[str]]:
    """Every function and method of a stub file, by dotted name, with its parameter names."""
    found: dict[str, list[str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef):
                args = node.args
                variadic = [a.arg for a in (args.vararg, args.kwarg) if a is not None]
                found[prefix + node.name] = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs] + variadic

    visit(ast.parse(stub.read_text()).body, "")
    return found


def test_every_parameter_list_matches_the_generated_stub(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(TOOLS / "stubgen"), "-m", "kvdump._C", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    generated = signatures(tmp_path / "kvdump" / "_C.pyi")
    ours = signatures(STUB)
    # pybind11's generated __init__ of an abstract class and operators take positional arguments
    # named arg0...; only names a caller can pass by keyword are compared.
    differing = {
        name: (ours.get(name), params)
        for name, params in generated.items()
        if not any(re.fullmatch(r"arg\d+", p) or p in ("args", "kwargs") for p in params) and ours.get(name) != params
    }
    assert not differing, differing
