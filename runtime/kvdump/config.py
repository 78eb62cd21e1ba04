"""The PD deployment config: one TOML file that the prefill and the decode role both read.

Both roles must agree on everything that decides a stored block's key and bytes (namespace, model,
block size, TP layout) and on where the store is, so they read it from one file instead of two sets
of flags that can drift apart. Every value is checked when the file is loaded, by the pydantic
models below (unknown keys are refused); a bad one raises :class:`ConfigError` naming the file,
the dotted key, what was expected and the value given, before any model is built or store opened.
What the roles build from a config (store, writer, loader, model) is in :mod:`kvdump.pd.wiring`.

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
options = { fsync = true }  # optional: merged into the URL's query string; an option the store
                            # refuses is reported as store.options.<name>

[writer]                    # optional; AsyncWriter (and KVLoader) settings
num_threads = 2             # 1..1024; omitted: the library default
queue_capacity = 1024       # 1..2**32
submit_timeout = 30.0       # seconds a submit may block on a full queue
staging_bytes = "256MiB"    # an integer or a size string ("1GiB", "64MB", "512KiB", ...), < 2**63
staging_timeout = 30.0      # seconds a task may wait for staging memory

[cache]
block_size = 16             # tokens per KV block, 1..2**20

[parallel]
tp_rank = 0                 # the key space this worker writes and reads (tp<rank>of<size>)
tp_size = 1                 # at most 65535

[timeouts]
write_wait = 60.0           # seconds the prefill waits for a forward's writes (the barrier)
load_wait = 60.0            # seconds the decode waits for a request's loads
```
"""

from __future__ import annotations

import tomllib
import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from kvdump import _C
from kvdump.errors import KvdumpValueError
from kvdump.key_space import KeySpace
from kvdump.model_dtypes import MODEL_DTYPES
from kvdump.writer_options import WriterOptions

PRESETS = ("tiny", "small")

MAX_TP_SIZE = _C.MAX_TP_SIZE


class ConfigError(KvdumpValueError):
    """A PD config file is unreadable or holds a bad value. ``path`` is the file, ``config_key`` the
    dotted key at fault (empty for problems with the file as a whole)."""

    def __init__(self, path: str | Path, key: str, problem: str, *, from_command_line: bool = False) -> None:
        where = key + (" (from the command line)" if from_command_line else "")
        super().__init__(f"{path}: {where}: {problem}" if key else f"{path}: {problem}")
        self.path = str(path)
        self.config_key = key


@dataclass(frozen=True)
class Expected:
    """Annotation of a config value type: whatever the type refuses, at any depth inside it, is
    reported as ``expected <words>``, in the config file's vocabulary rather than pydantic's
    ("Input should be a valid integer")."""

    words: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def refuse_in_words(value: Any, validate: core_schema.ValidatorFunctionWrapHandler) -> Any:
            try:
                return validate(value)
            except ValidationError:
                raise PydanticCustomError("config_value", "expected {expected}", {"expected": self.words}) from None

        return core_schema.no_info_wrap_validator_function(refuse_in_words, handler(source))


def integer(minimum: int, maximum: int | None = None) -> Any:
    """The type of an integer key in [minimum, maximum]. Strict: ``true`` is not a thread count."""
    words = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    return Annotated[StrictInt, Field(ge=minimum, le=maximum), Expected(words)]


def one_of(*names: str) -> Any:
    """The type of a key that takes one of ``names``."""
    return Annotated[Literal[names], Expected("one of " + ", ".join(repr(name) for name in names))]


def _key_space_checks(field: str) -> AfterValidator:
    """Checks a key-space value by making a key space of it: the rules are KeySpace's, stated once."""

    def check(value: Any) -> Any:
        KeySpace(**{field: value})
        return value

    return AfterValidator(check)


AtLeastZero = integer(0)
AtLeastOne = integer(1)
# The writer's own bounds (AsyncWriter refuses more), stated here so that a config over them is
# refused naming its key and file rather than failing later inside the writer.
ThreadCount = integer(1, 1024)
QueueCapacity = integer(1, 2**32)
MAX_STAGING_BYTES = 2**63 - 1
# Tokens per block. The record header could count up to 2**32 - 1, but already at 2**20 one block of
# one layer of a mid-sized model (K and V of 8 heads of 128 dims in bfloat16) is 4 GiB, a single
# store value: a larger size is a typo, refused before a role allocates a cache for it.
MAX_BLOCK_SIZE = 2**20
BlockSize = integer(1, MAX_BLOCK_SIZE)
TpRank = integer(0)  # its bound is tp_size: checked with it, by tp_rank_below_tp_size
TpSize = Annotated[StrictInt, _key_space_checks("tp_size"), Expected(f"an integer in [1, {MAX_TP_SIZE}]")]
Preset = one_of(*PRESETS)
ModelDtype = one_of(*MODEL_DTYPES)

Seconds = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False), Expected("a number of seconds > 0")]

_BYTE_SIZE = TypeAdapter(ByteSize)


def _byte_count(count_or_size: int | str) -> int:
    return int(_BYTE_SIZE.validate_python(count_or_size))


# pydantic's ByteSize reads "256MiB" and "1GB", but would also read `true` as one byte, and "1.9" as
# one: only an integer, or a whole number with an optional unit, reaches it.
ByteCount = Annotated[
    StrictInt | Annotated[StrictStr, Field(pattern=r"^\s*\d+\s*[A-Za-z]*\s*$")],
    AfterValidator(_byte_count),
    Field(ge=1, le=MAX_STAGING_BYTES),
    Expected(f"a byte count >= 1 and <= {MAX_STAGING_BYTES} (an integer or a string such as '256MiB')"),
]

# The namespace is the first segment of every store key: KeySpace states what it may hold.
Namespace = Annotated[
    StrictStr,
    _key_space_checks("namespace"),
    Expected("a non-empty string of printable ASCII characters without whitespace or '/'"),
]

StoreUrl = Annotated[
    StrictStr,
    Field(pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://"),
    Expected("a store URL such as 'file:///srv/kv' or 'mooncake://host:port?...'"),
]

# Read-only, like the frozen config that holds it.
StoreOptions = Annotated[
    Mapping[str, StrictStr | StrictInt | StrictFloat | StrictBool],
    AfterValidator(types.MappingProxyType),
    Expected("a table of strings, integers, numbers or booleans"),
]


def no_options() -> Mapping[str, str | int | float | bool]:
    return types.MappingProxyType({})


def url_with_options(url: str, options: Mapping[str, str | int | float | bool]) -> str:
    """``url`` with ``options`` in its query string (what :func:`kvdump.open_store` gets)."""
    if not options:
        return url
    parts = urlsplit(url)
    spelled = {name: (str(v).lower() if isinstance(v, bool) else str(v)) for name, v in options.items()}
    # An option replaces a same-named parameter already in the URL instead of repeating it, so
    # no store has to guess which of two values wins.
    kept = [(name, v) for name, v in parse_qsl(parts.query, keep_blank_values=True) if name not in spelled]
    query = kept + list(spelled.items())
    return urlunsplit(parts._replace(query=urlencode(query, safe=":/")))


def tp_rank_below_tp_size(tp_rank: int | None, info: ValidationInfo) -> int | None:
    """The check of ``tp_rank`` against ``tp_size``, which its model declares first so that it is
    checked first (and absent here when it failed its own check)."""
    tp_size = info.data.get("tp_size")
    if tp_rank is None or tp_size is None:
        return tp_rank
    try:
        KeySpace(tp_rank=tp_rank, tp_size=tp_size)
    except KvdumpValueError:
        raise PydanticCustomError(
            "config_value",
            "expected an integer in [0, {tp_size}) because tp_size is {tp_size}",
            {"tp_size": tp_size},
        ) from None
    return tp_rank


class ConfigSection(BaseModel):
    """A table of the config: read-only once checked, and refusing any key it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(ConfigSection):
    """``[model]``: which reference model both roles build, and the namespace of its keys."""

    namespace: Namespace
    preset: Preset
    seed: AtLeastZero = 0
    dtype: ModelDtype = "float32"


class StoreConfig(ConfigSection):
    """``[store]``: where blocks go. ``options`` are merged into the URL's query string (an option
    replaces a parameter of the same name in the URL)."""

    url: StoreUrl
    options: StoreOptions = Field(default_factory=no_options)

    @property
    def resolved_url(self) -> str:
        """The URL with ``options`` appended to its query (what :func:`kvdump.open_store` gets)."""
        return url_with_options(self.url, self.options)


_WRITER_DEFAULTS = WriterOptions()


class WriterConfig(ConfigSection):
    """``[writer]``: the :class:`kvdump.AsyncWriter` settings (the decode side's loader pool too),
    named as its keyword arguments."""

    # The library's defaults, read from the one struct that defines them.
    num_threads: ThreadCount | None = _WRITER_DEFAULTS.num_threads
    queue_capacity: QueueCapacity = _WRITER_DEFAULTS.queue_capacity
    submit_timeout: Seconds = _WRITER_DEFAULTS.submit_timeout
    staging_bytes: ByteCount = _WRITER_DEFAULTS.staging_bytes
    staging_timeout: Seconds = _WRITER_DEFAULTS.staging_timeout


class CacheConfig(ConfigSection):
    """``[cache]``: the paged KV cache layout both roles use."""

    block_size: BlockSize = 16


class ParallelConfig(ConfigSection):
    """``[parallel]``: the tensor-parallel key space (``tp<rank>of<size>``) of this worker."""

    tp_size: TpSize = 1
    tp_rank: TpRank = 0

    check_tp_rank = field_validator("tp_rank")(tp_rank_below_tp_size)


class TimeoutConfig(ConfigSection):
    """``[timeouts]``: deadlines in seconds, so a stuck store fails a request instead of hanging it."""

    write_wait: Seconds = 60.0
    load_wait: Seconds = 60.0


class PDConfig(BaseModel):
    """A loaded, checked PD config (see the module docstring for the file format); one field per
    section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig
    store: StoreConfig
    writer: WriterConfig = WriterConfig()
    cache: CacheConfig = CacheConfig()
    parallel: ParallelConfig = ParallelConfig()
    timeouts: TimeoutConfig = TimeoutConfig()

    # Not a field: the file is where the config came from, not a section it may hold.
    _path: Path = PrivateAttr(default=Path("<config>"))

    @property
    def path(self) -> Path:
        """The file this config was read from."""
        return self._path


def _as_written(value: Any) -> str:
    """A value as it would be spelled in TOML, so messages quote what the user wrote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _is_table(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unknown_section() -> str:
    return f"unknown section; known sections: {', '.join(PDConfig.model_fields)}"


def config_error(
    error: ValidationError,
    root: type[BaseModel],
    source: str | Path,
    *,
    table: str = "",
    overridden: Collection[str] = (),
) -> ConfigError:
    """The first problem pydantic found validating ``root`` from ``source``, as a :class:`ConfigError`
    in the file's words. ``table`` heads the dotted keys when ``root`` is a table of a larger
    document (vLLM's ``kv_connector_extra_config``); ``overridden`` holds the dotted keys whose
    values came from the command line."""
    problems = error.errors(include_url=False)
    # An unknown key first: it is often a misspelling, and then also the cause of a "missing" one.
    problem = min(problems, key=lambda p: p["type"] != "extra_forbidden")
    container: type[BaseModel] = root
    declared: Any = root
    names: list[str] = []
    for part in problem["loc"]:
        if not _is_table(declared):
            break  # deeper than the key: the key's own type speaks for what lies within it
        container = declared
        names.append(str(part))
        field = container.model_fields.get(str(part))
        declared = field.annotation if field else None

    key = ".".join([table, *names] if table else names)
    holder = ".".join([table, *names[:-1]] if table else names[:-1])
    is_section = container is PDConfig
    kind, given = problem["type"], problem["input"]
    if kind == "extra_forbidden":
        known = ", ".join(container.model_fields)
        words = _unknown_section() if is_section else f"unknown key; known keys of [{holder}]: {known}"
    elif kind == "missing" and is_section:
        words = f"missing required section [{key}]"
    elif kind == "missing":
        metadata = container.model_fields[names[-1]].metadata
        expected = [m.words for m in metadata if isinstance(m, Expected)]
        words = "missing required key" + "".join(f"; expected {e}" for e in expected)
    elif kind == "model_type":
        words = f"expected a table ([{key}]), got {_as_written(given)}"
    else:
        words = f"{problem['msg']}, got {_as_written(given)}"
    return ConfigError(source, key, words, from_command_line=key in overridden)


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


def _with_overrides(document: Mapping[str, Any], overrides: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``document`` with each dotted override set in its section."""
    merged = dict(document)
    for dotted, value in overrides.items():
        section, _, name = dotted.partition(".")
        if section not in PDConfig.model_fields:
            raise ConfigError(path, dotted, _unknown_section(), from_command_line=True)
        table = merged.get(section, {})
        # A section that is not a table is left as it is, for the check to report.
        if isinstance(table, Mapping):
            merged[section] = {**table, name: value}
    return merged


def config_from_mapping(
    document: Mapping[str, Any], path: str | Path = "<config>", overrides: Mapping[str, Any] | None = None
) -> PDConfig:
    """Check a parsed TOML document (plus ``overrides``, dotted keys) and build the config."""
    path = Path(path)
    overrides = dict(overrides or {})
    try:
        config = PDConfig.model_validate(_with_overrides(document, overrides, path))
    except ValidationError as error:
        raise config_error(error, PDConfig, path, overridden=overrides.keys()) from None
    config._path = path
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
