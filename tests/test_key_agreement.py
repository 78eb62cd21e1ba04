"""One model and one prompt give one hash chain, whichever part of kvdump computed it: the demo and
the PD roles (the reference model), and the transformers integration and the vLLM connector (a
checkpoint by name), so blocks one of them stores are hits for the others in a shared key space."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from kvdump.config import load_config
from kvdump.demo import DemoConfig, key_salt, model_config
from kvdump.hashing import block_hashes, model_salt
from kvdump.models import LlamaConfig
from kvdump.pd.wiring import hash_salt

TOKENS = list(range(3, 67))


def test_the_demo_and_the_pd_roles_salt_one_model_alike(tmp_path: Path) -> None:
    path = tmp_path / "pd.toml"
    path.write_text(
        textwrap.dedent(
            """
            [model]
            namespace = "ns"
            preset = "tiny"
            seed = 5
            dtype = "bfloat16"
            [store]
            url = "memory://"
            """
        )
    )
    tiny = LlamaConfig.tiny(seed=5)
    demo = DemoConfig(
        layers=tiny.num_layers,
        hidden=tiny.hidden_size,
        heads=tiny.num_heads,
        kv_heads=tiny.num_kv_heads,
        head_dim=tiny.head_dim,
        vocab=tiny.vocab_size,
        dtype="bfloat16",
        seed=5,
    )
    assert model_config(demo).name == tiny.name  # the same weights, though max_position differs
    assert hash_salt(load_config(path)) == key_salt(demo) == model_salt(tiny.name, "bfloat16")
    assert key_salt(DemoConfig(dtype="float32", seed=5)) != key_salt(demo)


def test_another_model_or_dtype_is_another_chain() -> None:
    tiny = LlamaConfig.tiny(seed=5)
    chains = {
        tuple(block_hashes(TOKENS, 16, model_salt(name, dtype)))
        for name in (tiny.name, LlamaConfig.tiny(seed=6).name, LlamaConfig.tiny(seed=5, num_layers=3).name)
        for dtype in ("float32", "bfloat16")
    }
    assert len(chains) == 6


def test_parts_of_the_salt_never_run_together() -> None:
    assert model_salt("ab", "c") != model_salt("a", "bc")
    assert model_salt("m", "float32", adapter="x") != model_salt("m", "float32", cache_salt="x")
    assert model_salt("m", torch.float16) == model_salt("m", "float16")


def test_transformers_and_vllm_salt_one_checkpoint_alike() -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("vllm")  # the connector's package imports vLLM
    from kvdump.integrations.transformers import model_salt_of
    from kvdump.integrations.vllm.request_keys import cache_element_type, request_salt

    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    config.name_or_path = "org/checkpoint"
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)

    class Request:  # the fields of a vLLM Request that salt its chain
        lora_request = None
        cache_salt = None

    vllm_salt = request_salt(Request(), "org/checkpoint", cache_element_type(torch.bfloat16, "auto"))
    assert model_salt_of(model) == vllm_salt
    assert request_salt(Request(), "org/checkpoint", cache_element_type(torch.bfloat16, "fp8_e4m3")) != vllm_salt


def test_the_old_namespace_keyword_of_the_hash_chain_is_a_deprecated_salt() -> None:
    with pytest.warns(DeprecationWarning, match="salt="):
        assert block_hashes(TOKENS, 16, namespace="m") == block_hashes(TOKENS, 16, "m")
    with pytest.raises(TypeError, match="not both"):
        block_hashes(TOKENS, 16, "m", namespace="m")
