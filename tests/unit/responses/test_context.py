"""What the model is given: sources fitted into the context in rank order, cut at a word, the rest left out; and
the citations the answer gets (the files given to the model, once each, at the end of the text)."""

from __future__ import annotations

from typing import Any

from tenantlm.responses.context import (
    SOURCES_HEADER,
    build_messages,
    chat_messages,
    citations,
    conservative_count,
    fit_sources,
    source_budget,
)
from tenantlm.responses.models import message
from tenantlm.tokens import estimate_prompt_tokens


def result(file_id: str, text: str, filename: str | None = None) -> dict[str, Any]:
    return {"file_id": file_id, "filename": filename or f"{file_id}.txt", "score": 0.5, "attributes": None,
            "content": [{"type": "text", "text": text}]}


def words(n: int, word: str = "lorem") -> str:
    return " ".join([word] * n)


def test_sources_that_fit_go_in_whole_in_rank_order() -> None:
    results = [result("file-a", "alpha text"), result("file-b", "bravo text")]
    sources = fit_sources(results, budget=1000, count=conservative_count)
    assert [(s.number, s.file_id, s.text) for s in sources] == [(1, "file-a", "alpha text"),
                                                               (2, "file-b", "bravo text")]
    system = build_messages(None, sources, [{"role": "user", "content": "q"}])[0]
    assert system["role"] == "system" and system["content"].startswith(SOURCES_HEADER)
    assert "[1] file-a.txt\nalpha text\n\n[2] file-b.txt\nbravo text" in system["content"]


def test_the_first_source_that_does_not_fit_is_cut_at_a_word_and_the_rest_left_out() -> None:
    results = [result("file-a", words(40)), result("file-b", words(400, "ipsum")), result("file-c", "tiny")]
    sources = fit_sources(results, budget=200, count=conservative_count)
    assert [s.file_id for s in sources] == ["file-a", "file-b"]
    assert sources[0].text == words(40)
    cut = sources[1].text
    assert cut.endswith(" …") and set(cut[:-2].split()) == {"ipsum"} and len(cut) < len(words(400, "ipsum"))
    used = sum(conservative_count(s.render() + "\n\n") for s in sources)
    assert used <= 200


def test_no_room_means_no_sources() -> None:
    assert fit_sources([result("file-a", words(100))], budget=10, count=conservative_count) == []
    assert fit_sources([result("file-a", "x")], budget=-50, count=conservative_count) == []


def test_the_budget_is_what_the_context_leaves_after_conversation_instructions_and_answer() -> None:
    conversation = [{"role": "user", "content": words(300)}]
    budget = source_budget(context_length=2048, answer_room=256, instructions="be brief",
                           conversation=conversation, count=conservative_count)
    prompt = estimate_prompt_tokens(build_messages("be brief", (), conversation), conservative_count)
    assert budget == 2048 - 256 - prompt - conservative_count(SOURCES_HEADER + "\n\n")
    longer = source_budget(context_length=2048, answer_room=256, instructions="be brief",
                           conversation=[*conversation, {"role": "user", "content": words(100)}],
                           count=conservative_count)
    assert longer < budget


def test_the_whole_prompt_with_fitted_sources_stays_inside_the_context() -> None:
    conversation = [{"role": "user", "content": words(200)}]
    budget = source_budget(context_length=2048, answer_room=256, instructions=None, conversation=conversation,
                           count=conservative_count)
    sources = fit_sources([result(f"file-{i}", words(600, f"w{i}")) for i in range(5)], budget=budget,
                          count=conservative_count)
    assert 2 <= len(sources) < 5 and sources[-1].text.endswith(" …")
    prompt = estimate_prompt_tokens(build_messages(None, sources, conversation), conservative_count)
    assert prompt + 256 <= 2048


def test_citations_name_each_file_given_to_the_model_once_at_the_end() -> None:
    sources = fit_sources([result("file-a", "one"), result("file-b", "two"), result("file-a", "three")],
                          budget=1000, count=conservative_count)
    text = "The answer."
    assert citations(sources, text) == [
        {"type": "file_citation", "file_id": "file-a", "filename": "file-a.txt", "index": len(text)},
        {"type": "file_citation", "file_id": "file-b", "filename": "file-b.txt", "index": len(text)}]
    assert citations([], text) == []


def test_stored_items_become_chat_messages_developer_as_system() -> None:
    items = [message("developer", "rules"), message("user", "hi"),
             {"id": "fs_1", "type": "file_search_call", "status": "completed", "queries": ["hi"], "results": None},
             message("assistant", "hello")]
    assert chat_messages(items) == [{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}]
