"""Reading a Responses API request: what is honoured, what is refused with a 400 naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest

from tenantlm.errors import InvalidRequest, UnsupportedFeature
from tenantlm.responses.models import INCLUDE_RESULTS, parse_request

FILE_SEARCH = {"type": "file_search", "vector_store_ids": ["vs_a"], "max_num_results": 3,
               "ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}},
               "filters": {"type": "eq", "key": "topic", "value": "geology"}}


def test_a_string_input_is_one_user_message_with_an_id() -> None:
    request = parse_request({"model": "m", "input": "hello"})
    [item] = request.input
    assert item["role"] == "user" and item["type"] == "message" and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "hello"}]
    assert request.store is True and request.stream is False and request.file_search is None


def test_message_items_keep_their_roles_and_join_their_text_parts() -> None:
    request = parse_request({"model": "m", "input": [
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a "},
                                                        {"type": "input_text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "earlier answer"}]}]})
    assert [(i["role"], i["content"][0]["text"]) for i in request.input] == [
        ("developer", "be brief"), ("user", "a b"), ("assistant", "earlier answer")]
    assert request.input[2]["content"][0] == {"type": "output_text", "text": "earlier answer", "annotations": []}
    assert len({i["id"] for i in request.input}) == 3


def test_the_file_search_tool_is_read_whole() -> None:
    request = parse_request({"model": "m", "input": "q", "tools": [FILE_SEARCH], "include": [INCLUDE_RESULTS]})
    search = request.file_search
    assert search is not None and search.vector_store_ids == ["vs_a"] and search.max_num_results == 3
    assert search.ranking.hybrid_search.text_weight == 1 and search.filters is not None
    assert search.filters.matches({"topic": "geology"}) and not search.filters.matches({"topic": "cooking"})
    assert request.include_results and request.search
    assert search.wire["ranking_options"]["hybrid_search"] == {"embedding_weight": 0, "text_weight": 1}


def test_tool_choice_none_keeps_the_tool_but_skips_the_search() -> None:
    request = parse_request({"model": "m", "input": "q", "tools": [FILE_SEARCH], "tool_choice": "none"})
    assert request.file_search is not None and not request.search


def test_fields_that_only_tune_openais_service_are_accepted() -> None:
    request = parse_request({"model": "m", "input": "q", "truncation": "auto", "parallel_tool_calls": False,
                             "service_tier": "auto", "text": {"format": {"type": "text"}}, "background": False})
    assert request.model == "m"


@pytest.mark.parametrize("body, param, error", [
    ({"input": "q"}, "model", InvalidRequest),
    ({"model": "m"}, "input", InvalidRequest),
    ({"model": "m", "input": ""}, "input", InvalidRequest),
    ({"model": "m", "input": []}, "input", InvalidRequest),
    ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", InvalidRequest),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0].type",
     UnsupportedFeature),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].type", UnsupportedFeature),
    ({"model": "m", "input": "q", "tools": [{"type": "function", "name": "f"}]}, "tools[0].type",
     UnsupportedFeature),
    ({"model": "m", "input": "q", "tools": [{"type": "file_search", "vector_store_ids": []}]},
     "tools[0].vector_store_ids", InvalidRequest),
    ({"model": "m", "input": "q", "tools": [{**FILE_SEARCH, "max_num_results": 99}]}, "tools[0].max_num_results",
     InvalidRequest),
    ({"model": "m", "input": "q", "tools": [{**FILE_SEARCH, "filters": {"type": "eq", "key": "k"}}]},
     "tools[0].filters.value", InvalidRequest),
    ({"model": "m", "input": "q", "include": ["message.output_text.logprobs"]}, "include", UnsupportedFeature),
    ({"model": "m", "input": "q", "background": True}, "background", UnsupportedFeature),
    ({"model": "m", "input": "q", "text": {"format": {"type": "json_object"}}}, "text.format", UnsupportedFeature),
    ({"model": "m", "input": "q", "store": "yes"}, "store", InvalidRequest),
    ({"model": "m", "input": "q", "max_output_tokens": 8}, "max_output_tokens", InvalidRequest),
    ({"model": "m", "input": "q", "temperature": 3}, "temperature", InvalidRequest),
    ({"model": "m", "input": "q", "metadata": {"k": 1}}, "metadata.k", InvalidRequest),
    ({"model": "m", "input": "q", "tool_choice": "required"}, "tool_choice", InvalidRequest),
    ({"model": "m", "input": "q", "frobnicate": 1}, "frobnicate", UnsupportedFeature),
])
def test_bad_requests_name_the_parameter(body: dict[str, Any], param: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        parse_request(body)
    assert isinstance(caught.value, InvalidRequest) and caught.value.param == param
