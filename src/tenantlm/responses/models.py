"""The Responses API's request, read from decoded JSON into what the service acts on, with OpenAI's 400s.

What is honoured: ``model``, ``input`` (a string, or message items: ``user`` / ``system`` / ``developer`` /
``assistant`` with text content), ``instructions``, ``tools`` (``file_search`` only), ``tool_choice`` (``auto``,
``required`` or ``file_search`` search; ``none`` skips the search), ``include`` (``file_search_call.results``),
``store``, ``stream``, ``previous_response_id``, ``metadata``, ``max_output_tokens``, ``temperature``, ``top_p``,
``user`` / ``safety_identifier`` (the end user), ``conversation`` (an id or ``{"id"}``: its items come before the
input, fitted by the tenant's memory policy, and the input and output are added to it; not together with
``previous_response_id``). Fields that only tune OpenAI's own service (``service_tier``,
``prompt_cache_key``, ``truncation``, ``parallel_tool_calls``, ``reasoning``, ``stream_options``, ``text`` with the
plain text format) are accepted and change nothing. Anything that would change the answer's meaning and is not served
here (other tools, other input types, structured output, ``background``) is a 400 ``unsupported_parameter`` rather
than silently ignored. ``prompt`` (a prompt template) is rendered by the service before the request is parsed
(``prompts.service``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenantlm.errors import InvalidRequest, UnsupportedFeature
from tenantlm.knowledge.filters import Filter, parse_filter
from tenantlm.knowledge.fusion import RankingOptions, parse_max_num_results
from tenantlm.knowledge.params import as_int, as_number, as_object, invalid, wrong_type
from tenantlm.knowledge.vector_stores import check_metadata

JSON = dict[str, Any]
INCLUDE_RESULTS = "file_search_call.results"
MAX_VECTOR_STORES = 2  # as OpenAI's file_search tool
MAX_INPUT_ITEMS = 2048
MIN_OUTPUT_TOKENS = 16  # as OpenAI
INPUT_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = {"user": ("input_text",), "system": ("input_text",), "developer": ("input_text",),
               "assistant": ("output_text", "refusal")}
_IGNORED = frozenset({"service_tier", "prompt_cache_key", "prompt_cache_retention", "truncation",
                      "parallel_tool_calls", "reasoning", "stream_options", "max_tool_calls", "top_logprobs",
                      "text"})
_KNOWN = frozenset({"model", "input", "instructions", "tools", "tool_choice", "include", "store", "stream",
                    "previous_response_id", "metadata", "max_output_tokens", "temperature", "top_p", "user",
                    "safety_identifier", "conversation", "prompt"}) | _IGNORED


def new_id(prefix: str) -> str:
    """``resp_`` / ``msg_`` / ``fs_`` and 192 random bits."""
    return prefix + secrets.token_hex(24)


@dataclass(frozen=True, slots=True)
class FileSearch:
    """The ``file_search`` tool: which of the tenant's vector stores, how many results, how ranked and filtered."""

    vector_store_ids: list[str]
    max_num_results: int
    ranking: RankingOptions
    filters: Filter | None
    wire: JSON  # the tool as the response object shows it


@dataclass(frozen=True, slots=True)
class ResponseRequest:
    model: str
    input: list[JSON]  # message items in their stored shape (ids given here)
    instructions: str | None
    file_search: FileSearch | None
    search: bool  # tool_choice allows the search
    tool_choice: str | JSON
    include_results: bool
    store: bool
    stream: bool
    previous_response_id: str | None
    conversation: str | None
    metadata: dict[str, str]
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    user: str | None
    safety_identifier: str | None
    prompt: JSON | None = None  # the prompt template used, as the response echoes it: id, base version, variables


def parse_request(body: Mapping[str, Any]) -> ResponseRequest:
    _check_fields(body)
    file_search = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), file_search)
    return ResponseRequest(
        model=_string(body.get("model"), "model", required=True, limit=256) or "",
        input=parse_input(body.get("input")),
        instructions=_string(body.get("instructions"), "instructions", limit=256_000),
        file_search=file_search,
        search=file_search is not None and tool_choice != "none",
        tool_choice=tool_choice,
        include_results=_include(body.get("include")),
        store=_bool(body.get("store"), "store", default=True),
        stream=_bool(body.get("stream"), "stream", default=False),
        previous_response_id=_string(body.get("previous_response_id"), "previous_response_id", limit=64),
        conversation=_conversation(body),
        metadata=check_metadata(body.get("metadata")),
        max_output_tokens=None if body.get("max_output_tokens") is None else as_int(
            body["max_output_tokens"], "max_output_tokens", minimum=MIN_OUTPUT_TOKENS, maximum=1 << 30),
        temperature=None if body.get("temperature") is None else as_number(
            body["temperature"], "temperature", minimum=0.0, maximum=2.0),
        top_p=None if body.get("top_p") is None else as_number(body["top_p"], "top_p", minimum=0.0, maximum=1.0),
        user=_string(body.get("user"), "user", limit=512),
        safety_identifier=_string(body.get("safety_identifier"), "safety_identifier", limit=512),
    )


def _check_fields(body: Mapping[str, Any]) -> None:
    for key in body:
        if key in _KNOWN:
            continue
        if key == "background" and not body[key]:
            continue  # false / null: the default, nothing asked for
        raise UnsupportedFeature(f"'{key}' is not supported by this server's Responses API", param=key)
    fmt = body.get("text", {}).get("format") if isinstance(body.get("text"), Mapping) else None
    if fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "text"):
        raise UnsupportedFeature("only the plain text format is supported ('text.format.type': 'text')",
                                 param="text.format")


def _conversation(body: Mapping[str, Any]) -> str | None:
    """``conversation``: an id, or an object with one; never together with ``previous_response_id``."""
    value = body.get("conversation")
    if value is None:
        return None
    if isinstance(value, Mapping):
        as_object(value, "conversation", required=("id",))
        conversation_id = _string(value["id"], "conversation.id", limit=64, required=True)
    else:
        conversation_id = _string(value, "conversation", limit=64, required=True)
    if body.get("previous_response_id") is not None:
        raise InvalidRequest("Mutually exclusive parameters: Ensure you are only providing one of: "
                             "'previous_response_id' or 'conversation'.", param="conversation")
    return conversation_id


def _string(value: object, param: str, *, limit: int, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
        return None
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    if required and not value:
        raise invalid(param, "expected a non-empty string.")
    if len(value) > limit:
        raise invalid(param, f"string too long. Expected at most {limit} characters.")
    return value


def _bool(value: object, param: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise wrong_type(param, "a boolean", value)
    return value


def _include(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise wrong_type("include", "an array of strings", value)
    for item in value:
        if item != INCLUDE_RESULTS:
            raise UnsupportedFeature(f"include: '{item}' is not supported here; only '{INCLUDE_RESULTS}' is",
                                     param="include")
    return INCLUDE_RESULTS in value


# --- tools --------------------------------------------------------------------------------------------------------
def _tools(value: object) -> FileSearch | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise wrong_type("tools", "an array", value)
    found: FileSearch | None = None
    for i, tool in enumerate(value):
        param = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind != "file_search":
            raise UnsupportedFeature(f"{param}: only the 'file_search' tool is supported here", param=f"{param}.type")
        if found is not None:
            raise invalid(param, "at most one file_search tool.")
        found = _file_search(tool, param)
    return found


def _file_search(tool: Mapping[str, Any], param: str) -> FileSearch:
    body = as_object(tool, param, required=("type", "vector_store_ids"),
                     allowed=("max_num_results", "filters", "ranking_options"))
    ids = body["vector_store_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise wrong_type(f"{param}.vector_store_ids", "an array of vector store ids", ids)
    if not 1 <= len(ids) <= MAX_VECTOR_STORES:
        raise invalid(f"{param}.vector_store_ids", f"expected 1 to {MAX_VECTOR_STORES} vector store ids.")
    limit = parse_max_num_results(body.get("max_num_results"), param=f"{param}.max_num_results")
    ranking = RankingOptions.parse(body.get("ranking_options"), param=f"{param}.ranking_options")
    filters = None if body.get("filters") is None else parse_filter(body["filters"], param=f"{param}.filters")
    wire: JSON = {"type": "file_search", "vector_store_ids": list(dict.fromkeys(ids)), "max_num_results": limit,
                  "filters": body.get("filters"),
                  "ranking_options": {"ranker": ranking.ranker, "score_threshold": ranking.score_threshold,
                                      "hybrid_search": {
                                          "embedding_weight": ranking.hybrid_search.embedding_weight,
                                          "text_weight": ranking.hybrid_search.text_weight}}}
    return FileSearch(vector_store_ids=wire["vector_store_ids"], max_num_results=limit, ranking=ranking,
                      filters=filters, wire=wire)


def _tool_choice(value: object, file_search: FileSearch | None) -> str | JSON:
    if value is None or value == "auto":
        return "auto"
    if value in ("none", "required"):
        if value == "required" and file_search is None:
            raise invalid("tool_choice", "'required' needs a tool in 'tools'.")
        return str(value)
    if isinstance(value, Mapping) and value.get("type") == "file_search":
        if file_search is None:
            raise invalid("tool_choice", "the file_search tool is not in 'tools'.")
        return {"type": "file_search"}
    raise UnsupportedFeature("tool_choice must be 'auto', 'none', 'required' or {'type': 'file_search'}",
                             param="tool_choice")


# --- input --------------------------------------------------------------------------------------------------------
def parse_input(value: object) -> list[JSON]:
    """``input`` as message items in the shape they are stored and listed in (``input_items``): each with an id,
    ``type: message``, ``role``, ``status`` and content parts (``input_text``; ``output_text`` for assistant
    messages)."""
    if isinstance(value, str):
        if not value:
            raise invalid("input", "expected a non-empty string.")
        return [message("user", value)]
    if not isinstance(value, list):
        raise InvalidRequest("Missing required parameter: 'input'." if value is None else
                             "Invalid type for 'input': expected a string or an array of input items.", param="input")
    if not value:
        raise invalid("input", "expected at least one input item.")
    if len(value) > MAX_INPUT_ITEMS:
        raise invalid("input", f"expected at most {MAX_INPUT_ITEMS} input items.")
    return [_item(item, f"input[{i}]") for i, item in enumerate(value)]


def _item(item: object, param: str) -> JSON:
    if not isinstance(item, Mapping):
        raise wrong_type(param, "an object", item)
    kind = item.get("type", "message")
    if kind != "message":
        raise UnsupportedFeature(f"{param}: input items of type '{kind}' are not supported here; send messages",
                                 param=f"{param}.type")
    role = item.get("role")
    if role not in INPUT_ROLES:
        raise InvalidRequest(f"Invalid value for '{param}.role': expected one of {', '.join(INPUT_ROLES)}.",
                             param=f"{param}.role")
    return message(role, _text(item.get("content"), role, f"{param}.content"))


def _text(content: object, role: str, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise wrong_type(param, "a string or an array of content parts", content)
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in _TEXT_PARTS[role]:
            raise UnsupportedFeature(f"{param}[{i}]: content of type '{kind}' is not supported here for "
                                     f"'{role}' messages ({', '.join(_TEXT_PARTS[role])} only)",
                                     param=f"{param}[{i}].type")
        text = part.get("refusal") if kind == "refusal" else part.get("text")
        if not isinstance(text, str):
            raise wrong_type(f"{param}[{i}].text", "a string", text)
        texts.append(text)
    return "".join(texts)


def message(role: str, text: str) -> JSON:
    """A message item as stored and listed: ``input_text`` for the user, system and developer, ``output_text`` with
    no annotations for the assistant."""
    part: JSON = {"type": "output_text", "text": text, "annotations": []} if role == "assistant" else \
        {"type": "input_text", "text": text}
    return {"id": new_id("msg_"), "type": "message", "role": role, "status": "completed", "content": [part]}


def item_text(item: JSON) -> str:
    """The text of a stored message item."""
    return "".join(str(p.get("text", "")) for p in item.get("content", ()) if isinstance(p, Mapping))
