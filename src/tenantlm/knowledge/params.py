"""Reading request parameters from decoded JSON, with OpenAI's 400 messages naming the parameter's path.

The knowledge parameters (``chunking_strategy``, ``filters``, ``ranking_options``, ``attributes``) are nested, and a
filter nests without limit, so they are read here by hand rather than by a schema: every error names the exact place
(``filters.filters[1].value``), in the words OpenAI's API uses for the same mistake.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from tenantlm.errors import InvalidRequest


def type_name(value: object) -> str:
    """How a JSON value's type is named in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def wrong_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
                          param=param)


def invalid(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {reason}", param=param)


def unsupported_value(param: str, value: object, supported: Iterable[str]) -> InvalidRequest:
    names = [f"'{s}'" for s in supported]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    shown = f"'{value}'" if isinstance(value, str) else type_name(value)
    return InvalidRequest(f"Invalid value: {shown}. Supported values are: {listed}.", param=param)


def as_object(value: object, param: str, *, required: Iterable[str] = (), allowed: Iterable[str] = ()
              ) -> Mapping[str, Any]:
    """``value`` as a JSON object that has every ``required`` key and no key outside ``required`` + ``allowed``."""
    if not isinstance(value, Mapping):
        raise wrong_type(param, "an object", value)
    required = tuple(required)
    known = set(required) | set(allowed)
    for key in value:
        if key not in known:
            raise InvalidRequest(f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    for key in required:
        if key not in value:
            raise InvalidRequest(f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}")
    return value


def is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number (a boolean is not one, although Python's ``bool`` is an ``int``)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_int(value: object, param: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise wrong_type(param, "an integer", value)
    if value < minimum:
        raise invalid(param, f"integer below minimum value. Expected a value >= {minimum}, but got {value} instead.")
    if value > maximum:
        raise invalid(param, f"integer above maximum value. Expected a value <= {maximum}, but got {value} instead.")
    return value


def as_number(value: object, param: str, *, minimum: float, maximum: float | None = None) -> float:
    if not is_number(value):
        raise wrong_type(param, "a number", value)
    number = float(value)
    if not math.isfinite(number):
        raise invalid(param, f"expected a finite number, but got {number} instead.")
    if number < minimum:
        raise invalid(param, f"number below minimum value. Expected a value >= {minimum}, but got {value} instead.")
    if maximum is not None and number > maximum:
        raise invalid(param, f"number above maximum value. Expected a value <= {maximum}, but got {value} instead.")
    return number
