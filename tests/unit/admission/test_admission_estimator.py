"""The tokenizer-free prompt estimate behind every reservation."""

from __future__ import annotations

from tenantlm.admission import estimate_prompt_tokens, reservation_tokens
from tenantlm.admission.service import MEDIA_TOKENS, MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS, text_tokens


def test_text_is_about_four_bytes_per_token() -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    assert text_tokens("x" * 400) == 100
    assert text_tokens("日本語") == 3  # 9 bytes of UTF-8: CJK is about a token per character, not a quarter


def test_chat_messages_add_a_per_message_overhead() -> None:
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 80, "name": "bob"}]
    expected = 2 * MESSAGE_OVERHEAD_TOKENS + 10 + 20 + 1 + REPLY_PRIMING_TOKENS
    assert estimate_prompt_tokens(messages) == expected


def test_content_parts_count_text_and_a_fixed_cost_per_image() -> None:
    huge_image = "data:image/png;base64," + "A" * 1_000_000
    messages = [{"role": "user", "content": [{"type": "text", "text": "z" * 40},
                                             {"type": "image_url", "image_url": {"url": huge_image}}]}]
    assert estimate_prompt_tokens(messages) == MESSAGE_OVERHEAD_TOKENS + 10 + MEDIA_TOKENS + REPLY_PRIMING_TOKENS


def test_tool_calls_and_arguments_count() -> None:
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "a" * 36}}]}
    assert estimate_prompt_tokens([call]) == MESSAGE_OVERHEAD_TOKENS + 1 + 1 + 9 + REPLY_PRIMING_TOKENS


def test_plain_inputs_strings_and_token_ids() -> None:
    assert estimate_prompt_tokens("x" * 8) == 2
    assert estimate_prompt_tokens(["x" * 8, "y" * 4]) == 3
    assert estimate_prompt_tokens([1, 2, 3]) == 3
    assert estimate_prompt_tokens([[1, 2], [3]]) == 3
    assert estimate_prompt_tokens(None) == 0


def test_reservation_uses_the_plan_default_when_max_tokens_is_absent() -> None:
    assert reservation_tokens(prompt_tokens=10, max_tokens=None, default_max_tokens=512) == 522
    assert reservation_tokens(prompt_tokens=10, max_tokens=5, default_max_tokens=512) == 15
