"""The source layering the build relies on: the torch-free core includes no torch, the pybind11
binding files include no libtorch (torch bundles its own pybind11, of another version), and the
direct Python entry of the write includes no pybind11 of either copy. Checked on the sources, so a
stray include fails here before it links two pybind11 versions into one extension."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.MULTILINE)
TORCH = re.compile(r"^(torch|ATen|c10|caffe2)/")
PYBIND = re.compile(r"^pybind11/")


HEADER_DIRS = [ROOT / "cpp/include", ROOT / "ops/include"]


def includes(path: Path) -> list[str]:
    """Every header `path` includes, with the project's own public headers followed through."""
    seen: list[str] = []
    pending = [path]
    visited: set[Path] = set()
    while pending:
        current = pending.pop()
        if current in visited:
            continue
        visited.add(current)
        for header in INCLUDE.findall(current.read_text()):
            seen.append(header)
            local = [d / header for d in HEADER_DIRS if (d / header).is_file()]
            local += [current.parent / header] if (current.parent / header).is_file() else []
            pending.extend(local)
    return seen


def sources(*dirs: str) -> list[Path]:
    found = [p for d in dirs for p in sorted((ROOT / d).rglob("*")) if p.suffix in {".cc", ".h"}]
    assert found, dirs  # a moved directory must not make this test pass vacuously
    return found


@pytest.mark.parametrize("path", sources("cpp/include", "cpp/src"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_includes_neither_torch_nor_pybind11(path: Path) -> None:
    bad = [h for h in includes(path) if TORCH.match(h) or PYBIND.match(h) or h == "Python.h"]
    assert bad == [], f"{path.relative_to(ROOT)} includes {bad}"


@pytest.mark.parametrize("path", sources("ops/bindings"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_binding_files_include_no_libtorch(path: Path) -> None:
    bad = [h for h in includes(path) if TORCH.match(h)]
    assert bad == [], f"{path.relative_to(ROOT)} includes {bad}"


@pytest.mark.parametrize(
    "path",
    [ROOT / "ops/python/direct_write.cc", ROOT / "ops/include/kvdump_ops/direct_write.h"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_direct_entry_includes_no_pybind11(path: Path) -> None:
    bad = [h for h in includes(path) if PYBIND.match(h) or h.startswith("torch/csrc/")]
    assert bad == [], f"{path.relative_to(ROOT)} includes {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "runtime/kvdump/models").glob("*.py")), ids=lambda p: p.name)
def test_the_reference_model_knows_nothing_of_kvdump(path: Path) -> None:
    # Its layer hook is the only integration point: kvdump.prompt_dump builds the hook that stores.
    import ast

    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name == "kvdump" or name.startswith("kvdump.")}
