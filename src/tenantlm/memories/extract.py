"""The rule-based fact extractor: what a user says about themselves, as short third-person facts.

It runs on every user message of a turn (no model call, so it works the same on the embedded model and costs
nothing). Each sentence that is a statement (a question is never a fact) is matched against these rules, first
match wins, case-insensitively:

====================================  ==========================================
the user says                         the fact stored
====================================  ==========================================
remember (that) X                     X's fact, or X itself
my name is X / call me X              The user's name is X.
my favo(u)rite T is X                 The user's favourite T is X.
my T is X  (e.g. "my dog's name")     The user's T is X.
I live in X / I'm from X              The user lives in X. / The user is from X.
I work at / for / as X                The user works at / for / as X.
I (really) like / love / enjoy X      The user likes / loves / enjoys X.
I prefer X                            The user prefers X.
I don't like / dislike / hate X       The user dislikes / hates X.
I have X / I've got X                 The user has X.
I am X / I'm X                        The user is X.
====================================  ==========================================

``X`` runs to the end of its sentence (at most :data:`MAX_FACT` characters). "I am going to ..." and the like
(an intention, not a fact) are left out. Anything else is not remembered: the rules favour precision over recall,
and a tenant or an operator adds what they miss through the admin API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

MAX_FACT = 300
_SENTENCE = re.compile(r"[^.!?;\n]+[.!?;]?")
_CLAUSE = re.compile(r",?\s+(?:and|but)\s+(?=i\b|i'|my\b)", re.IGNORECASE)
_REMEMBER = re.compile(r"^(?:please\s+)?(?:remember|note|keep in mind)(?:\s+that)?[:,]?\s+", re.IGNORECASE)
_OPENER = re.compile(r"^(?:and|also|oh|well|so|btw|by the way|fyi|hi|hello|hey)\b[,!\s]*", re.IGNORECASE)
_TRANSIENT = re.compile(r"^(?:going|trying|about|looking|just|not sure|wondering|asking|here|back|done|sorry|"
                        r"thinking|glad|happy to|afraid)\b", re.IGNORECASE)

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rule(pattern: str, render: Callable[[re.Match[str]], str]) -> Rule:
    return re.compile(pattern, re.IGNORECASE), render


def _rest(m: re.Match[str], group: str = "x") -> str:
    return m.group(group).strip().rstrip(".!").strip()


RULES: list[Rule] = [
    _rule(r"^my name is\s+(?P<x>.+)", lambda m: f"The user's name is {_rest(m)}."),
    _rule(r"^(?:please\s+)?call me\s+(?P<x>.+)", lambda m: f"The user's name is {_rest(m)}."),
    _rule(r"^my fav(?:ou?)rite\s+(?P<t>[\w' -]+?)\s+(?:is|are)\s+(?P<x>.+)",
          lambda m: f"The user's favourite {m.group('t').strip()} is {_rest(m)}."),
    _rule(r"^my\s+(?P<t>[\w' -]+?)\s+(?:is|are)\s+(?P<x>.+)",
          lambda m: f"The user's {m.group('t').strip()} is {_rest(m)}."),
    _rule(r"^i(?:\s+currently)?\s+live\s+in\s+(?P<x>.+)", lambda m: f"The user lives in {_rest(m)}."),
    _rule(r"^i(?:'m| am)\s+from\s+(?P<x>.+)", lambda m: f"The user is from {_rest(m)}."),
    _rule(r"^i\s+work\s+(?P<p>at|for|as|in|on)\s+(?P<x>.+)",
          lambda m: f"The user works {m.group('p').lower()} {_rest(m)}."),
    _rule(r"^i(?:\s+really)?\s+(?P<v>like|love|enjoy)\s+(?P<x>.+)",
          lambda m: f"The user {m.group('v').lower()}s {_rest(m)}."),
    _rule(r"^i\s+prefer\s+(?P<x>.+)", lambda m: f"The user prefers {_rest(m)}."),
    _rule(r"^i\s+(?:do not|don't|dont)\s+(?:like|enjoy)\s+(?P<x>.+)", lambda m: f"The user dislikes {_rest(m)}."),
    _rule(r"^i\s+(?P<v>dislike|hate)\s+(?P<x>.+)", lambda m: f"The user {m.group('v').lower()}s {_rest(m)}."),
    _rule(r"^i(?:\s+have|'ve got|\s+have got)\s+(?P<x>.+)", lambda m: f"The user has {_rest(m)}."),
    _rule(r"^i(?:'m| am)\s+(?P<x>.+)", lambda m: "" if _TRANSIENT.match(_rest(m)) else f"The user is {_rest(m)}."),
]


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!")) else text + "."


def clauses(text: str) -> Iterable[str]:
    """The statements of ``text``: its sentences (questions left out), split again at "and I" / "but my"."""
    for m in _SENTENCE.finditer(text.replace("\u2019", "'")):
        sentence = m.group(0).strip()
        if not sentence or sentence.endswith("?"):
            continue
        for clause in _CLAUSE.split(sentence):
            clause = _OPENER.sub("", clause.strip()).strip()
            if clause:
                yield clause


def fact_of(clause: str) -> str | None:
    """The fact one statement holds, or None. "Remember that X" is X's fact, or X itself."""
    told = _REMEMBER.match(clause)
    if told is not None:
        clause = clause[told.end():]
    for pattern, render in RULES:
        m = pattern.match(clause)
        if m is not None:
            return render(m) or None
    return _sentence(clause.rstrip(".!;").strip()) if told is not None and clause.strip() else None


def extract_facts(text: str) -> list[str]:
    """The facts the rules find in ``text``, in order, without repeats."""
    facts: list[str] = []
    for clause in clauses(text):
        fact = fact_of(clause)
        if fact and len(fact) <= MAX_FACT and fact not in facts:
            facts.append(fact)
    return facts
