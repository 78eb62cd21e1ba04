"""The reference model's dtypes have one list of names: the PD config and the demo's --dtype accept
exactly these, and each names the torch dtype the model is built in."""

from __future__ import annotations

import pytest
import torch

import kvdump
from kvdump import cli
from kvdump.config import ConfigError, config_from_mapping
from kvdump.model_dtypes import MODEL_DTYPES, torch_dtype

CONFIG = {"model": {"namespace": "ns", "preset": "tiny"}, "store": {"url": "file:///srv/kv"}}


@pytest.mark.parametrize("name", MODEL_DTYPES)
def test_every_name_is_a_torch_dtype_the_config_accepts(name: str) -> None:
    assert torch_dtype(name) == getattr(torch, name)
    assert isinstance(torch_dtype(name), torch.dtype)
    config = config_from_mapping({**CONFIG, "model": {**CONFIG["model"], "dtype": name}})
    assert config.model.dtype == name


def test_a_name_outside_the_list_is_refused_naming_the_dtype() -> None:
    with pytest.raises(kvdump.KvdumpValueError, match="dtype must be one of float32, bfloat16, float16, got 'int8'"):
        torch_dtype("int8")
    with pytest.raises(ConfigError, match="model.dtype: expected one of 'float32', 'bfloat16', 'float16', got 'int8'"):
        config_from_mapping({**CONFIG, "model": {**CONFIG["model"], "dtype": "int8"}})


def test_the_demo_flag_offers_the_same_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["demo", "--dtype", "int8"])
    assert caught.value.code == 2
    assert "choose from 'float32', 'bfloat16', 'float16'" in capsys.readouterr().err
