"""runtime/kvdump/_C.pyi describes the extension that is actually built: same names, same parameters."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import kvdump
from kvdump import _C

STUB = Path(kvdump.__file__).with_name("_C.pyi")


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text())


def stub_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in stub_tree().body if isinstance(n, ast.ClassDef)}


def public(names: list[str]) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def runtime_params(obj: object) -> list[str]:
    """Parameter names from pybind11's signature line, e.g. 'put(self: ..., key: str, data: ...) -> None'."""
    first = (obj.__doc__ or "").strip().splitlines()[0]
    inside = first[first.index("(") + 1 : first.rindex(")")]
    return [m.group(1) for m in re.finditer(r"(?:^|,\s*)(\w+):", inside)]


def stub_params(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in fn.args.args + fn.args.kwonlyargs]


def test_stub_and_marker_ship_with_the_package() -> None:
    assert STUB.is_file()
    assert STUB.with_name("py.typed").is_file()


def test_module_level_names_match() -> None:
    stubbed = {n.name for n in stub_tree().body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert stubbed == public(dir(_C))


@pytest.mark.parametrize("name", sorted(public(dir(_C))))
def test_members_and_parameters_match(name: str) -> None:
    runtime = getattr(_C, name)
    if not isinstance(runtime, type):
        fn = next(n for n in stub_tree().body if isinstance(n, ast.FunctionDef) and n.name == name)
        assert stub_params(fn) == runtime_params(runtime)
        return
    cls = stub_classes()[name]
    bases = [b.id for b in cls.bases if isinstance(b, ast.Name)]
    assert bases == [b.__name__ for b in runtime.__bases__ if b.__module__ == _C.__name__]
    members = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    inherited = set().union(*(public(dir(b)) for b in runtime.__bases__ if b.__module__ == _C.__name__))
    own = public(list(vars(runtime)))
    assert set(members) - {"__init__"} == own - inherited
    for member_name, fn in members.items():
        attr = vars(runtime)[member_name]
        if isinstance(attr, property):
            assert any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list), member_name
            continue
        assert stub_params(fn) == runtime_params(attr), member_name
