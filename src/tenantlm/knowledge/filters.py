"""Attribute filters of vector store search, in OpenAI's JSON shape, parsed once into a predicate.

A filter is a comparison ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": ..., "value": ...}`` or a
compound ``{"type": "and"|"or", "filters": [filter, ...]}`` nesting either. It is tested against a file's
``attributes``: up to 16 keys (at most 64 characters) mapped to strings (at most 512 characters), numbers or booleans
(:func:`parse_attributes` checks a map on its way in).

What matches (:meth:`Comparison.matches`):

- Numbers compare as numbers (``1`` equals ``1.0``), strings as strings (by code point, case-sensitive), booleans
  only with ``eq``/``ne`` against booleans. A boolean is never a number here, although JSON parsers in Python make
  ``true`` an ``int``.
- ``eq`` holds when the attribute exists, has the value's type, and is equal; ``gt``/``gte``/``lt``/``lte`` when the
  attribute exists and has the value's type (number or string) and compares so; ``in`` when the attribute equals one
  of the array's items (strings and numbers, mixed as you like).
- ``ne`` is exactly ``not eq`` and ``nin`` exactly ``not in``, so they also hold when the attribute is missing or of
  another type (as ``$ne``/``$nin`` do in MongoDB and Pinecone). A missing attribute never satisfies the others.
- ``and`` holds when all its filters do, ``or`` when any does.

A filter that cannot mean anything is refused with a 400 naming its place (``filters.filters[2].value``): an unknown
``type``, a missing or extra field, a key that is not a non-empty string of at most 64 characters, a value of the
wrong type for its operator (an array for ``eq``, a boolean for ``gt``, a scalar for ``in``, an empty array), a number
that is not finite, an empty compound, nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_COMPARISONS`
comparisons in all.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from tenantlm.knowledge.params import as_object, invalid, is_number, unsupported_value, wrong_type

AttributeValue: TypeAlias = str | int | float | bool
Attributes: TypeAlias = Mapping[str, AttributeValue]
ComparisonType = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
CompoundType = Literal["and", "or"]

COMPARISON_TYPES: tuple[ComparisonType, ...] = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUND_TYPES: tuple[CompoundType, ...] = ("and", "or")
MAX_ATTRIBUTES = 16
MAX_KEY_LENGTH = 64
MAX_STRING_VALUE_LENGTH = 512
MAX_DEPTH = 8  # compound filters nested in one another
MAX_COMPARISONS = 256

_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
                                                     "lte": operator.le}


def _kind(value: object) -> str | None:
    """The comparison class of a value: 'number', 'string', 'boolean' (None for anything else)."""
    if isinstance(value, bool):
        return "boolean"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _equal(attribute: object, value: object) -> bool:
    kind = _kind(attribute)
    return kind is not None and kind == _kind(value) and attribute == value


@dataclass(frozen=True, slots=True)
class Comparison:
    type: ComparisonType
    key: str
    value: AttributeValue | tuple[str | int | float, ...]

    def matches(self, attributes: Attributes | None) -> bool:
        if attributes is None or self.key not in attributes:
            return self.type in ("ne", "nin")
        attribute = attributes[self.key]
        if self.type in ("eq", "ne"):
            return _equal(attribute, self.value) == (self.type == "eq")
        if isinstance(self.value, tuple):  # in, nin
            return any(_equal(attribute, item) for item in self.value) == (self.type == "in")
        return _kind(attribute) == _kind(self.value) and bool(_ORDERINGS[self.type](attribute, self.value))

    def to_json(self) -> dict[str, object]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"type": self.type, "key": self.key, "value": value}


@dataclass(frozen=True, slots=True)
class Compound:
    type: CompoundType
    filters: tuple[Filter, ...]

    def matches(self, attributes: Attributes | None) -> bool:
        if self.type == "and":
            return all(f.matches(attributes) for f in self.filters)
        return any(f.matches(attributes) for f in self.filters)

    def to_json(self) -> dict[str, object]:
        return {"type": self.type, "filters": [f.to_json() for f in self.filters]}


Filter: TypeAlias = Comparison | Compound


def parse_filter(value: object, *, param: str = "filters") -> Filter:
    """A filter from a request body, validated as the module docstring says."""
    return _parse(value, param, depth=0, count=[0])


def _parse(value: object, param: str, *, depth: int, count: list[int]) -> Filter:
    if not isinstance(value, Mapping):
        raise wrong_type(param, "an object (a comparison or a compound filter)", value)
    kind = value.get("type")
    if kind in COMPOUND_TYPES:
        return _parse_compound(value, param, depth=depth, count=count)
    if kind in COMPARISON_TYPES or "type" not in value:
        count[0] += 1
        if count[0] > MAX_COMPARISONS:
            raise invalid(param, f"a filter may hold at most {MAX_COMPARISONS} comparisons.")
        return _parse_comparison(value, param)
    raise unsupported_value(f"{param}.type", kind, (*COMPARISON_TYPES, *COMPOUND_TYPES))


def _parse_compound(value: Mapping[str, object], param: str, *, depth: int, count: list[int]) -> Compound:
    body = as_object(value, param, required=("type", "filters"))
    if depth >= MAX_DEPTH:
        raise invalid(param, f"compound filters may be nested at most {MAX_DEPTH} deep.")
    items = body["filters"]
    if not isinstance(items, list | tuple):
        raise wrong_type(f"{param}.filters", "an array", items)
    if not items:
        raise invalid(f"{param}.filters", "expected at least one filter, but got an empty array instead.")
    parsed = tuple(_parse(item, f"{param}.filters[{i}]", depth=depth + 1, count=count) for i, item in enumerate(items))
    return Compound(type=body["type"], filters=parsed)


def _parse_comparison(value: Mapping[str, object], param: str) -> Comparison:
    body = as_object(value, param, required=("type", "key", "value"))
    kind: ComparisonType = body["type"]
    key = _key(body["key"], f"{param}.key")
    operand = body["value"]
    where = f"{param}.value"
    if kind in ("in", "nin"):
        return Comparison(type=kind, key=key, value=_array_operand(operand, where, kind))
    if isinstance(operand, list | tuple):
        hint = " (use 'in' to match any of several values)" if kind == "eq" else (
            " (use 'nin' to exclude several values)" if kind == "ne" else "")
        raise wrong_type(where, f"a string, a number or a boolean for '{kind}'{hint}", operand)
    if kind in ("eq", "ne"):
        return Comparison(type=kind, key=key, value=_scalar(operand, where, allow_bool=True))
    return Comparison(type=kind, key=key, value=_scalar(operand, where, allow_bool=False))


def _key(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    if not value or len(value) > MAX_KEY_LENGTH:
        raise invalid(param, f"expected an attribute key of 1 to {MAX_KEY_LENGTH} characters, but got one of "
                             f"{len(value)}.")
    return value


def _scalar(value: object, param: str, *, allow_bool: bool) -> AttributeValue:
    if isinstance(value, bool):
        if allow_bool:
            return value
        raise wrong_type(param, "a number or a string (booleans support only 'eq' and 'ne')", value)
    if is_number(value):
        if not math.isfinite(value):
            raise invalid(param, f"expected a finite number, but got {value} instead.")
        return value
    if isinstance(value, str):
        return value
    expected = "a string, a number or a boolean" if allow_bool else "a number or a string"
    raise wrong_type(param, expected, value)


def _array_operand(value: object, param: str, kind: str) -> tuple[str | int | float, ...]:
    if not isinstance(value, list | tuple):
        raise wrong_type(param, f"an array of strings and numbers for '{kind}'", value)
    if not value:
        raise invalid(param, f"expected at least one value for '{kind}', but got an empty array instead.")
    return tuple(_scalar(item, f"{param}[{i}]", allow_bool=False) for i, item in enumerate(value))


def parse_attributes(value: object, *, param: str = "attributes") -> dict[str, AttributeValue]:
    """A file's ``attributes`` from a request body (``None``: none): at most 16 keys of 1..64 characters, each a
    string of at most 512 characters, a finite number or a boolean."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise wrong_type(param, "an object", value)
    if len(value) > MAX_ATTRIBUTES:
        raise invalid(param, f"expected an object with at most {MAX_ATTRIBUTES} properties, but got one with "
                             f"{len(value)} properties instead.")
    out: dict[str, AttributeValue] = {}
    for key, item in value.items():
        _key(key, f"{param}.{key}" if isinstance(key, str) else param)
        where = f"{param}.{key}"
        out[key] = _scalar(item, where, allow_bool=True)
        if isinstance(item, str) and len(item) > MAX_STRING_VALUE_LENGTH:
            raise invalid(where, f"string too long. Expected a string with maximum length {MAX_STRING_VALUE_LENGTH}, "
                                 f"but got a string with length {len(item)} instead.")
    return out


def filter_predicate(filters: Filter | None) -> Callable[[Attributes | None], bool]:
    """A predicate over a file's attributes: the filter's :meth:`matches`, or one that accepts all (no filter)."""
    if filters is None:
        return lambda _attributes: True
    return filters.matches


def keys_of(filters: Filter) -> Sequence[str]:
    """Every attribute key a filter reads, in order of first mention (for callers that fetch only those)."""
    seen: dict[str, None] = {}
    stack: list[Filter] = [filters]
    while stack:
        node = stack.pop(0)
        if isinstance(node, Comparison):
            seen.setdefault(node.key, None)
        else:
            stack[:0] = node.filters
    return list(seen)
