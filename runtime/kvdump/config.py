"""The PD deployment config: one TOML file that the prefill and the decode role both read.

Both roles must agree on everything that decides a stored block's key and bytes (namespace, model,
block size, TP layout) and on where the store is, so they read it from one file instead of two sets
of flags that can drift apart. Every value is checked when the file is loaded; a bad one raises
:class:`ConfigError` naming the file, the dotted key and what was expected, before any model is
built or store opened.

```toml
[model]                     # required
namespace = "llama-tiny"    # required: first part of every store key; change it with the weights
                            # (printable ASCII without whitespace or '/')
preset = "tiny"             # required: "tiny" | "small" (kvdump.models.LlamaConfig presets)
seed = 0                    # weights are drawn from this seed, so both roles build the same model
dtype = "float32"           # "float32" | "bfloat16" | "float16"

[store]                     # required
url = "file:///srv/kv"      # required: anything kvdump.open_store takes; the PD roles refuse a
                            # store whose data dies with the process (memory://)
options = { fsync = true }  # optional: merged into the URL's query string

[writer]                    # optional; AsyncWriter (and KVLoader) settings
num_threads = 2             # omitted: the library default
queue_capacity = 1024
submit_timeout = 30.0       # seconds a submit may block on a full queue
staging_bytes = "256MiB"    # an integer or a size string (KiB, MiB, GiB, KB, MB, GB)
staging_timeout = 30.0      # seconds a task may wait for staging memory

[cache]
block_size = 16             # tokens per KV block

[parallel]
tp_rank = 0                 # the key space this worker writes and reads (tp<rank>of<size>)
tp_size = 1                 # at most 65535

[timeouts]
write_wait = 60.0           # seconds the prefill waits for a forward's writes (the barrier)
load_wait = 60.0            # seconds the decode waits for a request's loads
```
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from kvdump.errors import KvdumpValueError
from kvdump.model_dtypes import MODEL_DTYPES, torch_dtype

PRESETS = ("tiny", "small")


class ConfigError(KvdumpValueError):
    """A PD config file is unreadable or holds a bad value. ``path`` is the file, ``config_key`` the
    dotted key at fault (empty for problems with the file as a whole)."""

    def __init__(self, path: str | Path, key: str, problem: str, *, from_command_line: bool = False) -> None:
        where = key + (" (from the command line)" if from_command_line else "")
        super().__init__(f"{path}: {where}: {problem}" if key else f"{path}: {problem}")
        self.path = str(path)
        self.config_key = key


def _show(value: Any) -> str:
    """A value as it would be spelled in TOML, so messages quote what the user wrote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


_REJECT = object()


@dataclasses.dataclass(frozen=True)
class _Rule:
    """What one key accepts: ``expected`` words it for messages, ``convert`` returns the checked
    value or ``_REJECT``."""

    expected: str
    convert: Callable[[Any], Any]

    def apply(self, value: Any) -> Any:
        checked = self.convert(value)
        if checked is _REJECT:
            raise ValueError(f"expected {self.expected}, got {_show(value)}")
        return checked


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` is not a thread count.
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(minimum: int) -> _Rule:
    return _Rule(f"an integer >= {minimum}", lambda v: v if _is_int(v) and v >= minimum else _REJECT)


def _integer_in(minimum: int, maximum: int) -> _Rule:
    return _Rule(
        f"an integer in [{minimum}, {maximum}]", lambda v: v if _is_int(v) and minimum <= v <= maximum else _REJECT
    )


def _positive_seconds(value: Any) -> Any:
    if (_is_int(value) or isinstance(value, float)) and value > 0 and math.isfinite(value):
        return float(value)
    return _REJECT


_SECONDS = _Rule("a number of seconds > 0", _positive_seconds)


def _choice(*allowed: str) -> _Rule:
    names = ", ".join(repr(a) for a in allowed)
    return _Rule(f"one of {names}", lambda v: v if isinstance(v, str) and v in allowed else _REJECT)


def _namespace(value: Any) -> Any:
    # The namespace is the first segment of every store key ("<namespace>/tp0of1/..."): a '/' would
    # split it, and keys travel as file names and over the wire, so only printable ASCII is safe.
    if isinstance(value, str) and value and all("!" <= c <= "~" for c in value) and "/" not in value:
        return value
    return _REJECT


_NAMESPACE = _Rule("a non-empty string of printable ASCII characters without whitespace or '/'", _namespace)

# TP rank and size are 16-bit fields of every block record's header.
MAX_TP_SIZE = 65535

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def _bytes(value: Any) -> Any:
    if _is_int(value):
        count = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        count = int(match.group(1)) * _UNITS[(match.group(2) or "B").upper()]
    else:
        return _REJECT
    return count if count >= 1 else _REJECT


_BYTES = _Rule("a byte count >= 1 (an integer or a string such as '256MiB')", _bytes)

_STORE_URL = _Rule(
    "a store URL such as 'file:///srv/kv' or 'mooncake://host:port?...'",
    lambda v: v if isinstance(v, str) and "://" in v and urlsplit(v).scheme else _REJECT,
)


def _options(value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
        return _REJECT
    return types.MappingProxyType(dict(value))


_STORE_OPTIONS = _Rule("a table of strings, integers, numbers or booleans", _options)


def _key(rule: _Rule, default: Any = dataclasses.MISSING) -> Any:
    """A config key: the rule its value must pass, and its default (none: the key is required)."""
    if isinstance(default, Mapping):
        frozen = types.MappingProxyType(dict(default))
        return dataclasses.field(default_factory=lambda: frozen, hash=False, metadata={"rule": rule})
    return dataclasses.field(default=default, metadata={"rule": rule})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``[model]``: which reference model both roles build, and the namespace of its keys."""

    namespace: str = _key(_NAMESPACE)
    preset: str = _key(_choice(*PRESETS))
    seed: int = _key(_integer(0), 0)
    dtype: str = _key(_choice(*MODEL_DTYPES), "float32")

    def llama_config(self) -> Any:
        """The :class:`kvdump.models.LlamaConfig` of this preset, seed and dtype."""
        from kvdump.models import LlamaConfig

        preset = LlamaConfig.tiny if self.preset == "tiny" else LlamaConfig.small
        return preset(seed=self.seed, dtype=torch_dtype(self.dtype))


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """``[store]``: where blocks go. ``options`` are merged into the URL's query string (an option
    replaces a parameter of the same name in the URL)."""

    url: str = _key(_STORE_URL)
    options: Mapping[str, str | int | float | bool] = _key(_STORE_OPTIONS, {})

    @property
    def resolved_url(self) -> str:
        """The URL with ``options`` appended to its query (what :func:`kvdump.open_store` gets)."""
        if not self.options:
            return self.url
        parts = urlsplit(self.url)
        spelled = {name: (str(v).lower() if isinstance(v, bool) else str(v)) for name, v in self.options.items()}
        # An option replaces a same-named parameter already in the URL instead of repeating it, so
        # no store has to guess which of two values wins.
        kept = [(name, v) for name, v in parse_qsl(parts.query, keep_blank_values=True) if name not in spelled]
        query = kept + list(spelled.items())
        return urlunsplit(parts._replace(query=urlencode(query, safe=":/")))


@dataclasses.dataclass(frozen=True)
class WriterConfig:
    """``[writer]``: the :class:`kvdump.AsyncWriter` settings (the decode side's loader pool too)."""

    num_threads: int | None = _key(_integer(1), None)
    queue_capacity: int = _key(_integer(1), 1024)
    submit_timeout: float = _key(_SECONDS, 30.0)
    staging_bytes: int = _key(_BYTES, 256 << 20)
    staging_timeout: float = _key(_SECONDS, 30.0)

    def pool_kwargs(self) -> dict[str, Any]:
        """These settings as :class:`kvdump.AsyncWriter` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(WriterConfig)}


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """``[cache]``: the paged KV cache layout both roles use."""

    block_size: int = _key(_integer(1), 16)


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """``[parallel]``: the tensor-parallel key space (``tp<rank>of<size>``) of this worker."""

    tp_rank: int = _key(_integer(0), 0)
    tp_size: int = _key(_integer_in(1, MAX_TP_SIZE), 1)


@dataclasses.dataclass(frozen=True)
class TimeoutConfig:
    """``[timeouts]``: deadlines in seconds, so a stuck store fails a request instead of hanging it."""

    write_wait: float = _key(_SECONDS, 60.0)
    load_wait: float = _key(_SECONDS, 60.0)


SectionT = TypeVar("SectionT")

# Section name -> (dataclass, whether the section must be present).
_SECTIONS: dict[str, tuple[type, bool]] = {
    "model": (ModelConfig, True),
    "store": (StoreConfig, True),
    "writer": (WriterConfig, False),
    "cache": (CacheConfig, False),
    "parallel": (ParallelConfig, False),
    "timeouts": (TimeoutConfig, False),
}


@dataclasses.dataclass(frozen=True)
class PDConfig:
    """A loaded, checked PD config (see the module docstring for the file format)."""

    path: Path
    model: ModelConfig
    store: StoreConfig
    writer: WriterConfig = WriterConfig()
    cache: CacheConfig = CacheConfig()
    parallel: ParallelConfig = ParallelConfig()
    timeouts: TimeoutConfig = TimeoutConfig()

    @property
    def hash_namespace(self) -> str:
        """What block hashes are salted with: the namespace plus the model's identity, so that two
        configs that share a namespace but not the weights never read each other's blocks as hits."""
        m = self.model
        return f"{m.namespace}/{m.preset}/seed{m.seed}/{m.dtype}"

    def open_store(self) -> Any:
        """Open ``store.url`` (with ``store.options``). A URL ``open_store`` refuses (unknown scheme,
        bad option) raises :class:`ConfigError` naming ``store.url``."""
        from kvdump.errors import UnsupportedError
        from kvdump.stores import open_store

        try:
            return open_store(self.store.resolved_url)
        except (KvdumpValueError, UnsupportedError) as error:
            raise ConfigError(self.path, "store.url", str(error)) from error

    def writer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`kvdump.AsyncWriter` for this worker."""
        return {
            **self.writer.pool_kwargs(),
            "namespace": self.model.namespace,
            "tp_rank": self.parallel.tp_rank,
            "tp_size": self.parallel.tp_size,
        }

    def make_writer(self, store: Any | None = None) -> Any:
        """An :class:`kvdump.AsyncWriter` on ``store`` (default: a freshly opened one)."""
        from kvdump.writer import AsyncWriter

        return AsyncWriter(self.open_store() if store is None else store, **self.writer_kwargs())

    def make_loader(self, store: Any | None = None) -> Any:
        """A :class:`kvdump.KVLoader` reading this worker's key space from ``store``."""
        from kvdump.cache_ops import KVLoader

        return KVLoader(
            self.open_store() if store is None else store,
            namespace=self.model.namespace,
            tp_rank=self.parallel.tp_rank,
            tp_size=self.parallel.tp_size,
            num_threads=self.writer.num_threads,
            staging_bytes=self.writer.staging_bytes,
        )


def _build_section(
    cls: type[SectionT], table: Mapping[str, Any], section: str, path: Path, overridden: set[str]
) -> SectionT:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        dotted = f"{section}.{unknown[0]}"
        raise ConfigError(
            path,
            dotted,
            f"unknown key; known keys of [{section}]: {', '.join(fields)}",
            from_command_line=dotted in overridden,
        )
    values: dict[str, Any] = {}
    for name, field in fields.items():
        dotted = f"{section}.{name}"
        rule: _Rule = field.metadata["rule"]
        if name not in table:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(path, dotted, f"missing required key; expected {rule.expected}")
            continue
        try:
            values[name] = rule.apply(table[name])
        except ValueError as problem:
            raise ConfigError(path, dotted, str(problem), from_command_line=dotted in overridden) from None
    return cls(**values)


def parse_override(assignment: str) -> tuple[str, Any]:
    """``"writer.num_threads=4"`` -> ``("writer.num_threads", 4)``. The value is read as a TOML value
    (``4``, ``2.5``, ``true``, ``"text"``); anything that is not one is taken as a plain string, so
    ``store.url=file:///srv/kv`` needs no quoting."""
    key, sep, raw = assignment.partition("=")
    if not sep or key.count(".") != 1 or not all(part.strip() for part in key.split(".")):
        raise ConfigError("--set", "", f"expected SECTION.KEY=VALUE, got {assignment!r}")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def config_from_mapping(
    document: Mapping[str, Any], path: str | Path = "<config>", overrides: Mapping[str, Any] | None = None
) -> PDConfig:
    """Check a parsed TOML document (plus ``overrides``, dotted keys) and build the config."""
    path = Path(path)
    tables: dict[str, dict[str, Any]] = {}
    for section, table in document.items():
        if section not in _SECTIONS:
            raise ConfigError(path, section, f"unknown section; known sections: {', '.join(_SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(path, section, f"expected a table ([{section}]), got {_show(table)}")
        tables[section] = dict(table)
    overridden = set(overrides or {})
    for dotted, value in (overrides or {}).items():
        section, _, name = dotted.partition(".")
        if section not in _SECTIONS:
            known = ", ".join(_SECTIONS)
            raise ConfigError(path, dotted, f"unknown section; known sections: {known}", from_command_line=True)
        tables.setdefault(section, {})[name] = value

    built: dict[str, Any] = {}
    for section, (cls, required) in _SECTIONS.items():
        if section not in tables:
            if required:
                raise ConfigError(path, section, f"missing required section [{section}]")
            continue
        built[section] = _build_section(cls, tables[section], section, path, overridden)

    config = PDConfig(path=path, **built)
    tp_rank, tp_size = config.parallel.tp_rank, config.parallel.tp_size
    if tp_rank >= tp_size:
        raise ConfigError(
            path,
            "parallel.tp_rank",
            f"expected an integer in [0, {tp_size}) because parallel.tp_size is {tp_size}, got {tp_rank}",
            from_command_line="parallel.tp_rank" in overridden,
        )
    return config


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> PDConfig:
    """Read and check a PD config file. ``overrides`` maps dotted keys (``"parallel.tp_rank"``) to
    values that replace the file's, checked the same way. Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, "", f"cannot read the config file: {error}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "", f"not valid TOML: {error}") from None
    return config_from_mapping(document, path, overrides)


__all__ = [
    "CacheConfig",
    "ConfigError",
    "ModelConfig",
    "PDConfig",
    "ParallelConfig",
    "StoreConfig",
    "TimeoutConfig",
    "WriterConfig",
    "config_from_mapping",
    "load_config",
    "parse_override",
]
