"""Prompt templates: parse once, render by substitution.

The grammar is the whole of it: literal text, ``{{ name }}`` placeholders, and ``{% block name %}default text
{% endblock %}`` blocks a tenant override may fill. Nothing else inside ``{{ }}`` or ``{% %}`` is accepted (a 400 when
the template is stored), so a template can name variables and blocks and do nothing more.

Why a small renderer of our own rather than Jinja2's ``SandboxedEnvironment`` (installed here): the contract needs
two constructs, and Jinja2 would give every platform and tenant admin expressions, filters, loops and attribute
access to reason about (its sandbox limits them, yet ``{% for %}`` nests still burn CPU on the request path). Here a
template is parsed once into a list of parts; rendering joins literal strings with the variables' values as plain
text. A value is never parsed, so ``{{ 7*7 }}`` sent as a value stays those eight characters, and a template cannot
run code at all. It is also fast: a render is one ``str.join``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tenantlm.errors import InvalidRequest

_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_BLOCK = re.compile(r"block\s+([A-Za-z_][A-Za-z0-9_]{0,63})\Z")
_END = re.compile(r"endblock(?:\s+([A-Za-z_][A-Za-z0-9_]{0,63}))?\Z")


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    body: tuple[str | Var, ...]


Part = str | Var | Block


def parse(source: str, *, param: str, blocks: bool = True) -> tuple[Part, ...]:
    """``source`` as parts (literal strings, ``Var``, ``Block``); a 400 naming ``param`` for anything else.
    ``blocks=False``: the text of a block filled by an override, where blocks cannot appear."""
    parts: list[Part] = []
    open_block: tuple[str, list[Part]] | None = None
    pos = 0
    for match in _TAG.finditer(source):
        target = parts if open_block is None else open_block[1]
        if match.start() > pos:
            target.append(source[pos:match.start()])
        pos = match.end()
        if match.group(1) is not None:
            target.append(Var(_variable(match.group(1).strip(), param)))
            continue
        tag = match.group(2).strip()
        if not blocks:
            raise InvalidRequest(f"'{{% {tag} %}}' is not allowed here: block text holds text and {{{{variables}}}}",
                                 param=param)
        open_block = _block_tag(tag, open_block, parts, param)
    if open_block is not None:
        raise InvalidRequest(f"block '{open_block[0]}' has no {{% endblock %}}", param=param)
    if pos < len(source):
        parts.append(source[pos:])
    _unique_blocks(parts, param)
    return tuple(parts)


def _variable(name: str, param: str) -> str:
    if not _NAME.match(name):
        raise InvalidRequest(f"'{{{{ {name} }}}}' is not a placeholder: write {{{{name}}}} with a variable's name "
                             "(letters, digits and _); expressions are not evaluated", param=param)
    return name


def _block_tag(tag: str, open_block: tuple[str, list[Part]] | None, parts: list[Part],
               param: str) -> tuple[str, list[Part]] | None:
    start, end = _BLOCK.match(tag), _END.match(tag)
    if start is not None:
        if open_block is not None:
            raise InvalidRequest(f"block '{start.group(1)}' is inside block '{open_block[0]}'; blocks do not nest",
                                 param=param)
        return start.group(1), []
    if end is not None and open_block is not None:
        if end.group(1) not in (None, open_block[0]):
            raise InvalidRequest(f"{{% endblock {end.group(1)} %}} closes block '{open_block[0]}'", param=param)
        parts.append(Block(open_block[0], tuple(p for p in open_block[1] if not isinstance(p, Block))))
        return None
    if end is not None:
        raise InvalidRequest("{% endblock %} without a block", param=param)
    raise InvalidRequest(f"'{{% {tag} %}}' is not supported: only {{% block name %}} and {{% endblock %}}",
                         param=param)


def _unique_blocks(parts: list[Part], param: str) -> None:
    names = [p.name for p in parts if isinstance(p, Block)]
    for name in names:
        if names.count(name) > 1:
            raise InvalidRequest(f"block '{name}' is declared twice", param=param)


def block_names(parts: tuple[Part, ...]) -> list[str]:
    return [p.name for p in parts if isinstance(p, Block)]


def variable_names(parts: tuple[Part, ...]) -> set[str]:
    found: set[str] = set()
    for p in parts:
        if isinstance(p, Var):
            found.add(p.name)
        elif isinstance(p, Block):
            found.update(q.name for q in p.body if isinstance(q, Var))
    return found


def flatten(parts: tuple[Part, ...], fills: Mapping[str, tuple[str | Var, ...]]) -> tuple[str | Var, ...]:
    """The parts with every block replaced by its fill (when given) or its default text, adjacent text merged."""
    out: list[str | Var] = []
    for p in parts:
        for q in (fills.get(p.name, p.body) if isinstance(p, Block) else (p,)):
            if isinstance(q, str) and out and isinstance(out[-1], str):
                out[-1] += q
            else:
                out.append(q)
    return tuple(out)


def render(parts: tuple[str | Var, ...], values: Mapping[str, str]) -> str:
    """Substitute: every ``Var`` becomes its value's text, which is never looked at again."""
    return "".join([p if isinstance(p, str) else values[p.name] for p in parts])
