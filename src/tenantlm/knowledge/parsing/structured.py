"""JSON and CSV rendered as lines of text that read on their own once the text is cut into chunks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from tenantlm.knowledge.parsing.model import Budget, ParseLimits, invalid
from tenantlm.knowledge.parsing.text import decode, normalise

_CHECK_EVERY = 1024
_DELIMITERS = (",", ";", "\t", "|")


def json_text(data: bytes, limits: ParseLimits, budget: Budget) -> str:
    """json: one line per scalar, ``path: value`` (``order.items[0].name: pen``); a top-level scalar is its value.
    Empty objects and arrays give no line. Nesting deeper than ``max_json_depth`` fails the file."""
    if len(data) > limits.max_json_bytes:
        raise invalid(f"The JSON file is larger than {limits.max_json_bytes:,} bytes.")
    try:
        value = json.loads(normalise(decode(data)))
    except (ValueError, RecursionError):
        raise invalid("The file is not valid JSON.") from None
    return "\n".join(budget.add(line) for line in _json_lines(value, limits, budget))


def _json_lines(value: Any, limits: ParseLimits, budget: Budget) -> Iterator[str]:
    """Depth-first with a stack of iterators, so neither depth nor width costs more than the parsed value itself."""
    if not isinstance(value, dict | list):
        yield _scalar(value)
        return
    stack = [_children("", value)]
    visited = 0
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        path, node = item
        visited += 1
        if visited % _CHECK_EVERY == 0:
            budget.deadline.check()
        if not isinstance(node, dict | list):
            yield f"{path}: {_scalar(node)}"
        elif len(stack) < limits.max_json_depth:
            stack.append(_children(path, node))
        else:
            raise invalid(f"The JSON is nested deeper than {limits.max_json_depth} levels.")


def _children(path: str, node: dict[str, Any] | list[Any]) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        return ((f"{path}.{key}" if path else key, child) for key, child in node.items())
    return ((f"{path}[{index}]", child) for index, child in enumerate(node))


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def csv_text(data: bytes, limits: ParseLimits, budget: Budget) -> str:
    """csv: the first row names the columns; every later non-empty row is one line ``name: value; name: value``
    (empty cells left out, line breaks inside a cell made spaces, a cell past the named columns called
    ``column N``). The delimiter is whichever of ``,`` ``;`` tab ``|`` the first line has most of (``,`` on a tie)."""
    text = normalise(decode(data))
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(rows, [])
        _check_fields(header, limits)
        lines = (_csv_line(header, row, limits) for row in rows)
        return "\n".join(budget.add(line) for line in _counted(lines, limits, budget) if line)
    except csv.Error:
        raise invalid(f"The CSV file is malformed or has a field longer than {limits.max_csv_field_chars:,} "
                      "characters.") from None


def _delimiter(text: str) -> str:
    first_line = text.split("\n", 1)[0]
    return max(_DELIMITERS, key=first_line.count)


def _counted(lines: Iterator[str], limits: ParseLimits, budget: Budget) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        if number > limits.max_csv_rows:
            raise invalid(f"The CSV file has more than {limits.max_csv_rows:,} rows.")
        if number % _CHECK_EVERY == 0:
            budget.deadline.check()
        yield line


def _csv_line(header: list[str], row: list[str], limits: ParseLimits) -> str:
    _check_fields(row, limits)
    cells = []
    for index, cell in enumerate(row):
        value = " ".join(cell.split())
        if value:
            name = " ".join(header[index].split()) if index < len(header) else ""
            cells.append(f"{name or f'column {index + 1}'}: {value}")
    return "; ".join(cells)


def _check_fields(row: list[str], limits: ParseLimits) -> None:
    if any(len(cell) > limits.max_csv_field_chars for cell in row):
        raise csv.Error("field too long")
