"""The PD deployment config: the example files stay valid, and every kind of mistake in a config is
refused with a message that names the file, the dotted key and what was expected."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest
import torch

import kvdump
from kvdump import cli
from kvdump.config import ConfigError, PDConfig, load_config, parse_override
from kvdump.pd.wiring import llama_config, make_writer, open_store

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = sorted((REPO / "examples").rglob("*.toml"))

MINIMAL = """
[model]
namespace = "ns"
preset = "tiny"

[store]
url = "memory://"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pd.toml"
    path.write_text(textwrap.dedent(text))
    return path


def cli_config(tmp_path: Path) -> str:
    """MINIMAL with a store the PD roles accept (memory:// is refused), so that a CLI test fails only
    for the fault it is about."""
    return MINIMAL.replace('"memory://"', f'"file://{tmp_path}/kv"')


def with_key(section: str, line: str) -> str:
    """MINIMAL with ``line`` added to ``[section]`` (the section is appended if MINIMAL lacks it)."""
    header = f"[{section}]\n"
    if header in MINIMAL:
        return MINIMAL.replace(header, header + line + "\n")
    return MINIMAL + "\n" + header + line + "\n"


def test_every_example_config_loads() -> None:
    assert {p.parent.name for p in EXAMPLE_CONFIGS} >= {"single_machine", "mooncake"}
    for path in EXAMPLE_CONFIGS:
        config = load_config(path)
        assert isinstance(config, PDConfig)
        assert config.path == path


def test_single_machine_example_opens_a_file_store(tmp_path: Path) -> None:
    config = load_config(REPO / "examples/single_machine/pd.toml", {"store.url": f"file://{tmp_path}/kv"})
    assert config.model.preset in ("tiny", "small")
    store = open_store(config)
    assert isinstance(store, kvdump.FileStore)
    assert store.root == f"{tmp_path}/kv"


def test_mooncake_example_spells_the_master_and_metadata_server() -> None:
    config = load_config(REPO / "examples/mooncake/pd.toml")
    url = config.store.resolved_url
    assert url.startswith("mooncake://127.0.0.1:50051?")
    for parameter in (
        "metadata_server=http://127.0.0.1:8080/metadata",
        "protocol=tcp",
        "global_segment_size=",
        "local_buffer_size=",
    ):
        assert parameter in url


@pytest.mark.parametrize(
    ("written", "count"),
    [("4096", 4096), ('"1GiB"', 1 << 30), ('"1GB"', 10**9), ('"64 MB"', 64 * 10**6), ('"512kib"', 512 << 10)],
)
def test_staging_bytes_reads_a_count_or_a_size_string(tmp_path: Path, written: str, count: int) -> None:
    config = load_config(write(tmp_path, with_key("writer", f"staging_bytes = {written}")))
    assert config.writer.staging_bytes == count
    assert type(config.writer.staging_bytes) is int


def test_defaults_and_values_come_through(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.writer.num_threads is None
    assert config.cache.block_size == 16
    assert (config.parallel.tp_rank, config.parallel.tp_size) == (0, 1)
    config = load_config(write(tmp_path, with_key("writer", 'staging_bytes = "3MiB"') + "\n[cache]\nblock_size = 8\n"))
    assert config.writer.staging_bytes == 3 << 20
    assert config.cache.block_size == 8


BAD_VALUES = [
    ("writer", "num_threads", "0", "expected an integer in [1, 1024], got 0"),
    ("writer", "num_threads", "true", "expected an integer in [1, 1024], got true"),
    ("writer", "num_threads", "2.0", "expected an integer in [1, 1024], got 2.0"),
    # The writer's own limits: refused here, naming the key, rather than by the writer later.
    ("writer", "num_threads", "1025", "expected an integer in [1, 1024], got 1025"),
    ("writer", "queue_capacity", '"8"', "expected an integer in [1, 4294967296], got '8'"),
    ("writer", "queue_capacity", "false", "expected an integer in [1, 4294967296], got false"),
    ("writer", "queue_capacity", "4294967297", "expected an integer in [1, 4294967296], got 4294967297"),
    ("writer", "submit_timeout", "true", "expected a number of seconds > 0, got true"),
    ("writer", "submit_timeout", "0", "expected a number of seconds > 0, got 0"),
    ("writer", "staging_timeout", '"soon"', "expected a number of seconds > 0, got 'soon'"),
    ("writer", "staging_bytes", '"12XB"', "expected a byte count >= 1"),
    ("writer", "staging_bytes", "0", "expected a byte count >= 1"),
    ("writer", "staging_bytes", "true", "(an integer or a string such as '256MiB'), got true"),
    ("writer", "staging_bytes", "2.5", "got 2.5"),
    ("writer", "staging_bytes", '"0KiB"', "got '0KiB'"),
    ("writer", "staging_bytes", "9223372036854775808", "<= 9223372036854775807 (an integer or a string"),
    (
        "writer",
        "staging_bytes",
        '"8EiB"',
        "<= 9223372036854775807 (an integer or a string such as '256MiB'), got '8EiB'",
    ),
    ("model", "seed", "-1", "expected an integer >= 0, got -1"),
    ("model", "seed", "true", "expected an integer >= 0, got true"),
    ("model", "dtype", '"float64"', "expected one of 'float32', 'bfloat16', 'float16', got 'float64'"),
    ("store", "options", "{ x = [1] }", "expected a table of strings, integers, numbers or booleans"),
    ("cache", "block_size", "0", "expected an integer in [1, 1048576], got 0"),
    ("cache", "block_size", "true", "expected an integer in [1, 1048576], got true"),
    ("cache", "block_size", "1048577", "expected an integer in [1, 1048576], got 1048577"),
    ("parallel", "tp_size", "0", "expected an integer in [1, 65535], got 0"),
    ("parallel", "tp_size", "65536", "expected an integer in [1, 65535], got 65536"),
    ("parallel", "tp_size", "true", "expected an integer in [1, 65535], got true"),
    ("parallel", "tp_rank", "-1", "expected an integer >= 0, got -1"),
    ("parallel", "tp_rank", "false", "expected an integer >= 0, got false"),
    ("timeouts", "load_wait", "inf", "expected a number of seconds > 0, got inf"),
    ("timeouts", "write_wait", "-2.5", "expected a number of seconds > 0, got -2.5"),
    ("timeouts", "write_wait", "nan", "expected a number of seconds > 0, got nan"),
]


@pytest.mark.parametrize(
    ("section", "key", "value", "message"), BAD_VALUES, ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD_VALUES]
)
def test_bad_value_names_file_key_and_expectation(
    tmp_path: Path, section: str, key: str, value: str, message: str
) -> None:
    path = write(tmp_path, with_key(section, f"{key} = {value}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.config_key == f"{section}.{key}"
    assert str(caught.value).startswith(f"{path}: {section}.{key}: ")
    assert message in str(caught.value)
    assert isinstance(caught.value, kvdump.KvdumpValueError)


def test_replacing_a_required_value_badly_is_refused(tmp_path: Path) -> None:
    cases = [
        ("model.preset", MINIMAL.replace('"tiny"', '"huge"'), "expected one of 'tiny', 'small', got 'huge'"),
        ("model.namespace", MINIMAL.replace('"ns"', '"a b"'), f"{NAMESPACE_EXPECTED}, got 'a b'"),
        ("model.namespace", MINIMAL.replace('"ns"', '""'), f"{NAMESPACE_EXPECTED}, got ''"),
        ("store.url", MINIMAL.replace('"memory://"', '"/srv/kv"'), "expected a store URL such as 'file:///srv/kv'"),
    ]
    for key, text, message in cases:
        with pytest.raises(ConfigError, match=f"{key}: {message}"):
            load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match="store.url: expected a store URL .* got 5"):
        load_config(write(tmp_path, MINIMAL.replace('"memory://"', "5")))


NAMESPACE_EXPECTED = "expected a non-empty string of printable ASCII characters without whitespace or '/'"


@pytest.mark.parametrize(
    "namespace",
    ["a/b", "/", "llama/", "a\\tb", "na\\u00efve", "ns\\u00a0", "a\\u007fb", "\\u4e2d"],
    ids=["slash", "only-slash", "trailing-slash", "tab", "non-ascii", "nbsp", "del", "cjk"],
)
def test_a_namespace_that_cannot_head_a_store_key_is_refused(tmp_path: Path, namespace: str) -> None:
    # TOML escapes spell the control and non-ASCII characters: the file itself is plain ASCII.
    path = write(tmp_path, MINIMAL.replace('"ns"', f'"{namespace}"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.config_key == "model.namespace"
    assert str(caught.value).startswith(f"{path}: model.namespace: {NAMESPACE_EXPECTED}, got ")
    with pytest.raises(ConfigError, match=r"model\.namespace \(from the command line\): expected"):
        load_config(write(tmp_path, MINIMAL), {"model.namespace": "a/b"})


def test_a_namespace_of_printable_ascii_is_accepted(tmp_path: Path) -> None:
    for namespace in ("llama-3.1_8b", "A~!@#$%^&*()+=[]{}|;:,.<>?", "x"):
        text = MINIMAL.replace('"ns"', "'" + namespace + "'")  # a TOML literal string: no escapes
        assert load_config(write(tmp_path, text)).model.namespace == namespace


def test_cli_names_model_namespace_for_a_namespace_with_a_slash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, cli_config(tmp_path).replace('"ns"', '"a/b"'))
    assert cli.main(["prefill", "--config", str(path), "--random-prompts", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"kvdump prefill: {path}: model.namespace: {NAMESPACE_EXPECTED}, got 'a/b'\n"


def test_tp_size_beyond_the_record_header_is_refused_also_from_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    too_big = r"parallel\.tp_size \(from the command line\): expected an integer in \[1, 65535\], got 70000"
    with pytest.raises(ConfigError, match=too_big):
        load_config(path, {"parallel.tp_size": 70000, "parallel.tp_rank": 69999})
    config = load_config(path, {"parallel.tp_size": 65535, "parallel.tp_rank": 65534})
    assert (config.parallel.tp_rank, config.parallel.tp_size) == (65534, 65535)


def test_tp_rank_must_lie_below_tp_size(tmp_path: Path) -> None:
    path = write(tmp_path, with_key("parallel", "tp_rank = 2\ntp_size = 2"))
    with pytest.raises(ConfigError, match=r"parallel\.tp_rank: expected an integer in \[0, 2\)") as caught:
        load_config(path)
    assert caught.value.config_key == "parallel.tp_rank"


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, with_key("writer", "num_thread = 4")))
    message = str(caught.value)
    assert "writer.num_thread: unknown key" in message
    assert "num_threads, queue_capacity, submit_timeout, staging_bytes, staging_timeout" in message


SECTION_KEYS = {
    "model": "namespace, preset, seed, dtype",
    "store": "url, options",
    "writer": "num_threads, queue_capacity, submit_timeout, staging_bytes, staging_timeout",
    "cache": "block_size",
    "parallel": "tp_size, tp_rank",
    "timeouts": "write_wait, load_wait",
}


@pytest.mark.parametrize("section", list(SECTION_KEYS))
def test_an_unknown_key_is_refused_in_every_section(tmp_path: Path, section: str) -> None:
    path = write(tmp_path, with_key(section, "colour = 1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.config_key == f"{section}.colour"
    known = SECTION_KEYS[section]
    assert str(caught.value) == f"{path}: {section}.colour: unknown key; known keys of [{section}]: {known}"
    with pytest.raises(ConfigError, match=rf"{section}\.colour \(from the command line\): unknown key"):
        load_config(write(tmp_path, MINIMAL), {f"{section}.colour": 1})


def test_a_misspelt_required_key_is_named_rather_than_the_missing_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL.replace("preset =", "prest =")))
    assert caught.value.config_key == "model.prest"
    assert "unknown key; known keys of [model]" in str(caught.value)


def test_unknown_section_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="writers: unknown section; known sections: model, store, writer, cache"):
        load_config(write(tmp_path, MINIMAL + "\n[writers]\nnum_threads = 2\n"))


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    text = "writer = 3\n" + MINIMAL
    with pytest.raises(ConfigError, match=r"writer: expected a table \(\[writer\]\), got 3"):
        load_config(write(tmp_path, text))


def test_missing_required_key_and_section(tmp_path: Path) -> None:
    no_preset = MINIMAL.replace('preset = "tiny"\n', "")
    with pytest.raises(ConfigError, match="model.preset: missing required key; expected one of 'tiny', 'small'"):
        load_config(write(tmp_path, no_preset))
    no_url = MINIMAL.replace('url = "memory://"\n', "")
    with pytest.raises(ConfigError, match="store.url: missing required key"):
        load_config(write(tmp_path, no_url))
    no_store = MINIMAL[: MINIMAL.index("[store]")]
    with pytest.raises(ConfigError, match=r"store: missing required section \[store\]"):
        load_config(write(tmp_path, no_store))


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: cannot read the config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="pd.toml: not valid TOML"):
        load_config(write(tmp_path, "[model\nnamespace = 1"))


def test_overrides_replace_file_values_and_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(path, dict([parse_override("parallel.tp_rank=1"), parse_override("parallel.tp_size=2")]))
    assert (config.parallel.tp_rank, config.parallel.tp_size) == (1, 2)
    assert parse_override("store.url=file:///srv/kv") == ("store.url", "file:///srv/kv")
    assert parse_override('model.namespace="x"') == ("model.namespace", "x")
    with pytest.raises(
        ConfigError, match=r"writer.num_threads \(from the command line\): expected an integer in \[1, 1024\]"
    ):
        load_config(path, {"writer.num_threads": 0})
    with pytest.raises(
        ConfigError, match=r"parallel.tp_rank \(from the command line\): expected an integer in \[0, 1\)"
    ):
        load_config(path, {"parallel.tp_rank": 3})
    with pytest.raises(ConfigError, match=r"nosuch.key \(from the command line\): unknown section"):
        load_config(path, {"nosuch.key": 1})
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        parse_override("num_threads=4")


def test_store_options_merge_into_the_url(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'url = "memory://"', f'url = "file://{tmp_path}/kv?fsync=false"\noptions = {{ fsync = true }}'
    )
    config = load_config(write(tmp_path, text))
    # The option replaces the URL's own parameter rather than repeating it.
    assert config.store.resolved_url == f"file://{tmp_path}/kv?fsync=true"
    assert isinstance(open_store(config), kvdump.FileStore)


def test_store_the_url_cannot_open_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL.replace('"memory://"', '"nosuch://x"')))
    with pytest.raises(ConfigError, match="store.url: no store for scheme 'nosuch'"):
        open_store(config)
    config = load_config(write(tmp_path, MINIMAL.replace('"memory://"', '"memory://?capacity=5"')))
    with pytest.raises(ConfigError, match="store.url: unknown store option 'capacity'"):
        open_store(config)


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ('{ fsync = "maybe" }', "store.options.fsync", "store option 'fsync' must be true or false, got 'maybe'"),
        ("{ capacity = 5 }", "store.options.capacity", "unknown store option 'capacity'"),
    ],
)
def test_a_store_option_the_store_refuses_is_named_as_the_option(
    tmp_path: Path, options: str, key: str, message: str
) -> None:
    path = write(tmp_path, cli_config(tmp_path) + f"options = {options}\n")
    with pytest.raises(ConfigError) as caught:
        open_store(load_config(path))
    assert caught.value.config_key == key
    assert str(caught.value).startswith(f"{path}: {key}: ")
    assert message in str(caught.value)


def test_a_refused_url_that_quotes_the_options_is_still_named_as_the_url(tmp_path: Path) -> None:
    # The file store quotes the whole URL, options and all, when its host is wrong: the URL is at fault.
    text = MINIMAL.replace('"memory://"', '"file://elsewhere/kv"') + "options = { fsync = true }\n"
    with pytest.raises(ConfigError, match="store.url: file store URL must be file:///absolute/path") as caught:
        open_store(load_config(write(tmp_path, text)))
    assert caught.value.config_key == "store.url"


def test_the_writer_limits_themselves_are_accepted(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent("""
        [writer]
        num_threads = 1024
        queue_capacity = 4294967296
        staging_bytes = 9223372036854775807

        [cache]
        block_size = 1048576
    """)
    config = load_config(write(tmp_path, text))
    assert (config.writer.num_threads, config.writer.queue_capacity) == (1024, 2**32)
    assert (config.writer.staging_bytes, config.cache.block_size) == (2**63 - 1, 2**20)


def test_make_writer_takes_every_writer_setting(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent("""
        [writer]
        num_threads = 3
        queue_capacity = 7
        staging_bytes = "2MiB"

        [parallel]
        tp_rank = 1
        tp_size = 4
    """)
    config = load_config(write(tmp_path, text))
    with make_writer(config) as writer:
        stats = writer.stats()
        assert stats["num_threads"] == 3
        assert stats["queue_capacity"] == 7
        assert stats["staging"]["capacity_bytes"] == 2 << 20
        assert (writer.namespace, writer.tp_rank, writer.tp_size) == ("ns", 1, 4)


def test_cli_bad_config_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, cli_config(tmp_path) + "\n[writer]\nnum_threads = 0\n")
    for role in ("prefill", "decode"):
        assert cli.main([role, "--config", str(path), "--random-prompts", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "writer.num_threads: expected an integer in [1, 1024], got 0" in err
    path = write(tmp_path, cli_config(tmp_path))
    assert cli.main(["decode", "--config", str(path), "--tp-rank", "5", "--prompt", "x"]) == 2
    assert "parallel.tp_rank (from the command line)" in capsys.readouterr().err


def test_cli_process_exit_code_2_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, cli_config(tmp_path).replace('"tiny"', '"huge"'))
    proc = subprocess.run(
        [sys.executable, "-m", "kvdump.cli", "prefill", "--config", str(path), "--random-prompts", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"kvdump prefill: {path}: model.preset: expected one of 'tiny', 'small', got 'huge'"


def test_a_loaded_config_cannot_be_changed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL.replace('"memory://"', '"memory://"\noptions = { fsync = true }')))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.writer.num_threads = 4  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.model = config.model  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.store.options["fsync"] = False  # type: ignore[index]


def test_the_model_comes_in_the_configured_dtype(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, with_key("model", 'dtype = "bfloat16"\nseed = 7')))
    llama = llama_config(config.model)
    assert (llama.dtype, llama.seed) == (torch.bfloat16, 7)
