"""What the model is given for a response, and the citations its answer gets.

The messages: one leading system message (the request's ``instructions``, then the numbered sources that
``file_search`` retrieved), then the conversation: the input and output messages of every earlier response in the
``previous_response_id`` chain, oldest first, then this request's input. ``developer`` messages go to the model as
``system`` ones (not every chat template knows the newer role). Earlier instructions are not carried over, as OpenAI
does not carry them over either; retrieved sources of earlier turns are not replayed (their answers are).

Fitting the context (a small embedded model has 2,048 tokens): the sources get what is left of the model's context
length after the conversation, the instructions and the room kept for the answer (``max_output_tokens``, or
:data:`ANSWER_ROOM` tokens). Sources go in rank order; the first that does not fit whole is cut at a word boundary to
what is left, and the rest are left out. Tokens are counted with the catalog's tokenizer for the model when it names
one, otherwise at :data:`BYTES_PER_TOKEN` bytes of UTF-8 a token: more tokens than common tokenizers make of English
text, so the prompt fits. The conversation itself is never cut: one that does not fit is the model's 400
(``context_length_exceeded``).

Citations (a simple rule): the answer cites every file whose text was given to the model, once, in rank order, each
as a ``file_citation`` at the end of the text (``index`` = the text's length). Files that were left out to fit the
context are not cited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tenantlm.responses.models import item_text
from tenantlm.tokens import MESSAGE_OVERHEAD_TOKENS, TokenCounter, counter_for, estimate_prompt_tokens

JSON = dict[str, Any]
ANSWER_ROOM = 256
BYTES_PER_TOKEN = 3
MIN_SOURCE_TOKENS = 16  # less room than this for a source: leave it out rather than give the model a fragment
SOURCES_HEADER = ("Answer using the numbered sources below where they are relevant. If they do not hold the answer, "
                  "say so.\n\nSources:")
_CHAT_ROLES = {"developer": "system"}


@dataclass(frozen=True, slots=True)
class Source:
    """One retrieved chunk as the model sees it: ``[number] filename`` and its (perhaps cut) text."""

    number: int
    file_id: str
    filename: str
    text: str

    def render(self) -> str:
        return f"[{self.number}] {self.filename}\n{self.text}"


def conservative_count(text: str) -> int:
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return math.ceil(size / BYTES_PER_TOKEN)


def token_counter(tokenizer: str | None) -> TokenCounter:
    """The catalog tokenizer's count, or :func:`conservative_count`."""
    return conservative_count if tokenizer is None else counter_for(tokenizer)


def chat_messages(items: Sequence[JSON]) -> list[JSON]:
    """Stored items (messages of either side; tool calls are skipped) as chat messages."""
    out = []
    for item in items:
        if item.get("type") == "message":
            role = str(item.get("role"))
            out.append({"role": _CHAT_ROLES.get(role, role), "content": item_text(item)})
    return out


def system_message(instructions: str | None, sources: Sequence[Source]) -> JSON | None:
    parts = [instructions] if instructions else []
    if sources:
        parts.append(SOURCES_HEADER + "\n\n" + "\n\n".join(s.render() for s in sources))
    return {"role": "system", "content": "\n\n".join(parts)} if parts else None


def build_messages(instructions: str | None, sources: Sequence[Source], conversation: list[JSON]) -> list[JSON]:
    system = system_message(instructions, sources)
    return conversation if system is None else [system, *conversation]


def source_budget(*, context_length: int, answer_room: int, instructions: str | None, conversation: list[JSON],
                  count: TokenCounter) -> int:
    """Tokens left for the sources' text (headers included) once everything else has its room."""
    without = build_messages(instructions, (), conversation)
    used = estimate_prompt_tokens(without, count)
    if instructions is None:
        used += MESSAGE_OVERHEAD_TOKENS  # the system message the sources will need
    return context_length - answer_room - used - count(SOURCES_HEADER + "\n\n")


def fit_sources(results: Sequence[JSON], *, budget: int, count: TokenCounter) -> list[Source]:
    """The search results as numbered sources, in rank order, within ``budget`` tokens (see the module's rules)."""
    sources: list[Source] = []
    left = budget
    for result in results:
        number = len(sources) + 1
        text = "".join(str(part.get("text", "")) for part in result.get("content", ()))
        source = Source(number, str(result["file_id"]), str(result.get("filename") or result["file_id"]), text)
        cost = count(source.render() + "\n\n")
        if cost <= left:
            sources.append(source)
            left -= cost
            continue
        room = left - count(f"[{number}] {source.filename}\n\n\n")
        if room >= MIN_SOURCE_TOKENS:
            sources.append(Source(number, source.file_id, source.filename, cut_text(text, room, count)))
        break
    return sources


def cut_text(text: str, tokens: int, count: TokenCounter) -> str:
    """The longest prefix of ``text`` that ends at a word boundary and counts at most ``tokens`` with an ellipsis."""
    low, high = 0, len(text)
    while low < high:  # the longest prefix length that fits
        mid = (low + high + 1) // 2
        if count(text[:mid] + " …") <= tokens:
            low = mid
        else:
            high = mid - 1
    prefix = text[:low]
    if low < len(text) and " " in prefix:
        prefix = prefix[:prefix.rindex(" ")]
    return prefix.rstrip() + " …"


def citations(sources: Sequence[Source], text: str) -> list[JSON]:
    """``file_citation`` annotations for the files given to the model, once each, in rank order, at the text's end."""
    seen: dict[str, Source] = {}
    for source in sources:
        seen.setdefault(source.file_id, source)
    return [{"type": "file_citation", "file_id": s.file_id, "filename": s.filename, "index": len(text)}
            for s in seen.values()]
