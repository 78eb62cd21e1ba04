"""Errors cross the C++/Python boundary intact: the same codes on both sides, and keys as named."""

from __future__ import annotations

from kvdump import _C
from kvdump.errors import StatusCode, error_for_code


def test_python_status_codes_match_the_core():
    assert {code.name: code.value for code in StatusCode} == _C.status_codes()


def test_every_code_maps_to_an_exception_carrying_it():
    for code in StatusCode:
        if code is StatusCode.OK:
            continue
        error = error_for_code(code, "message", "some key")
        assert error.code == code and error.key == "some key"


def test_a_key_with_spaces_and_brackets_survives_the_torch_op_boundary():
    import pytest
    import torch

    import kvdump
    from kvdump.stores.dict_store import DictStore

    odd = "odd key] 100%\tthere"

    class Refusing(DictStore):
        def get(self, key):
            raise kvdump.KeyNotFoundError("refused by the test store", key=odd)

    with pytest.raises(kvdump.KeyNotFoundError) as caught:
        kvdump.load_cache_store(Refusing(), 0, torch.zeros(2, 2, 4, 1, 8), [0], [5])
    assert caught.value.key == odd
