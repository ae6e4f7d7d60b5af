"""What a prompt is made of, read from the admin API's JSON with OpenAI-shaped 400s: a template (instructions text,
or messages), its variables schema, optional model settings; a tenant override (blocks to fill, or a whole template);
label names. And the variables a request sends, checked against the schema.

Variables schema (the contract): ``{"name": {"type": "string"|"number"|"boolean", "required": bool, "default": …,
"description": …}}``. A request's ``variables`` may only name declared variables; a required one without a default
must be given; each value must have its declared type (a string may also come as OpenAI's
``{"type": "input_text", "text": …}``). Values become text: numbers as written, booleans as ``true`` / ``false``.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenantlm.errors import InvalidRequest
from tenantlm.prompts.template import Part, block_names, parse, variable_names

JSON = dict[str, Any]
TYPES = ("string", "number", "boolean")
ROLES = ("system", "developer", "user", "assistant")
MODEL_SETTINGS = {"model": str, "temperature": float, "top_p": float, "max_output_tokens": int}
PRODUCTION = "production"
MAX_TEMPLATE_CHARS = 100_000
MAX_MESSAGES = 50
MAX_VARIABLES = 100
_LABEL = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def new_prompt_id() -> str:
    """``pmpt_`` and 192 random bits."""
    return "pmpt_" + secrets.token_hex(24)


@dataclass(frozen=True, slots=True)
class Variable:
    type: str
    required: bool
    default: str | float | bool | None
    description: str | None

    def public(self) -> JSON:
        return {"type": self.type, "required": self.required, "default": self.default,
                "description": self.description}


Schema = dict[str, Variable]
# A parsed template: one entry per message (role, parts); a text template is one entry whose role is None.
Shape = tuple[tuple[str | None, tuple[Part, ...]], ...]


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {message}", param=param)


# --- the platform's prompt and its versions ------------------------------------------------------------------------
def parse_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise _bad("name", "expected a non-empty string of at most 200 characters.")
    return value.strip()


def parse_schema(value: object, param: str = "variables") -> Schema:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_VARIABLES:
        raise _bad(param, f"expected an object of at most {MAX_VARIABLES} variables.")
    return {_var_name(name, param): _variable(spec, f"{param}.{name}") for name, spec in value.items()}


def _var_name(name: str, param: str) -> str:
    if not _NAME.match(name):
        raise _bad(f"{param}.{name}", "a variable's name has letters, digits and _ (not first a digit).")
    return name


def _variable(spec: object, param: str) -> Variable:
    if not isinstance(spec, Mapping):
        raise _bad(param, "expected an object with 'type'.")
    unknown = set(spec) - {"type", "required", "default", "description"}
    if unknown:
        raise _bad(f"{param}.{sorted(unknown)[0]}", "unknown field.")
    kind = spec.get("type")
    if kind not in TYPES:
        raise _bad(f"{param}.type", f"expected one of {', '.join(TYPES)}.")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise _bad(f"{param}.required", "expected a boolean.")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise _bad(f"{param}.description", "expected a string.")
    default = spec.get("default")
    if default is not None and not _has_type(default, str(kind)):
        raise _bad(f"{param}.default", f"expected a {kind}.")
    return Variable(type=str(kind), required=required, default=default, description=description)


def _has_type(value: object, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_template(value: object, param: str = "template") -> tuple[JSON | str | list[JSON], Shape]:
    """The template as stored (a string, or messages ``[{"role", "content"}]``) and its parsed shape."""
    if isinstance(value, str):
        return value, ((None, _parse_text(value, param)),)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_MESSAGES:
        raise _bad(param, f"expected a string, or an array of 1 to {MAX_MESSAGES} messages.")
    stored: list[JSON] = []
    shape: list[tuple[str | None, tuple[Part, ...]]] = []
    for i, message in enumerate(value):
        at = f"{param}[{i}]"
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise _bad(at, "expected a message with 'role' and 'content'.")
        if message["role"] not in ROLES:
            raise _bad(f"{at}.role", f"expected one of {', '.join(ROLES)}.")
        if not isinstance(message["content"], str):
            raise _bad(f"{at}.content", "expected a string.")
        stored.append({"role": message["role"], "content": message["content"]})
        shape.append((message["role"], _parse_text(message["content"], f"{at}.content")))
    names = [n for _role, parts in shape for n in block_names(parts)]
    if len(names) != len(set(names)):
        raise _bad(param, "a block name is declared twice.")
    return stored, tuple(shape)


def _parse_text(text: str, param: str) -> tuple[Part, ...]:
    if len(text) > MAX_TEMPLATE_CHARS:
        raise _bad(param, f"at most {MAX_TEMPLATE_CHARS} characters.")
    return parse(text, param=param)


def shape_variables(shape: Shape) -> set[str]:
    return {n for _role, parts in shape for n in variable_names(parts)}


def shape_blocks(shape: Shape) -> list[str]:
    return [n for _role, parts in shape for n in block_names(parts)]


def check_declared(shape: Shape, schema: Schema, param: str) -> None:
    """Every placeholder names a declared variable (a template cannot ask for what a request cannot send)."""
    undeclared = sorted(shape_variables(shape) - set(schema))
    if undeclared:
        raise _bad(param, f"'{{{{{undeclared[0]}}}}}' is not declared in 'variables'.")


def parse_model_settings(value: object) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad("model", "expected an object of model settings.")
    out: JSON = {}
    for key, item in value.items():
        kind = MODEL_SETTINGS.get(key)
        if kind is None:
            raise _bad(f"model.{key}", f"unknown setting; known: {', '.join(MODEL_SETTINGS)}.")
        ok = isinstance(item, str) if kind is str else (
            isinstance(item, int | float) and not isinstance(item, bool) and (kind is float or isinstance(item, int)))
        if not ok:
            raise _bad(f"model.{key}", f"expected a {kind.__name__}.")
        out[key] = item
    return out


def parse_label(label: str) -> str:
    if not _LABEL.match(label):
        raise _bad("label", "a label has lowercase letters, digits, '_', '-' and '.', at most 64.")
    return label


def parse_version(value: object, param: str = "version") -> int:
    """A version as the API writes it ("1", "2", …); numbers are accepted too."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not text.isdigit() or not 0 < int(text) < 1 << 31:
        raise _bad(param, "expected a version number such as \"1\".")
    return int(text)


# --- a tenant's override ---------------------------------------------------------------------------------------------
def parse_override(body: Mapping[str, Any]) -> JSON:
    """``{"blocks": {"name": "text"}}`` or ``{"template": …}``, exactly one."""
    if set(body) not in ({"blocks"}, {"template"}):
        raise InvalidRequest("send either 'blocks' (text for blocks the base prompt declares) or 'template' (a whole "
                             "template replacing the base's)", param="blocks" if "blocks" in body else "template")
    if "template" in body:
        stored, _shape = parse_template(body["template"])
        return {"template": stored}
    blocks = body["blocks"]
    if not isinstance(blocks, Mapping) or not blocks:
        raise _bad("blocks", "expected an object of block names to text.")
    for name, text in blocks.items():
        if not isinstance(text, str):
            raise _bad(f"blocks.{name}", "expected a string.")
        fill_parts(text, f"blocks.{name}")
    return {"blocks": dict(blocks)}


def fill_parts(text: str, param: str) -> tuple[Part, ...]:
    if len(text) > MAX_TEMPLATE_CHARS:
        raise _bad(param, f"at most {MAX_TEMPLATE_CHARS} characters.")
    return parse(text, param=param, blocks=False)


# --- a request's variables -------------------------------------------------------------------------------------------
def bind(schema: Schema, given: object, param: str = "prompt.variables") -> dict[str, str]:
    """The text of every declared variable for one request: given, else its default, else empty (optional)."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidRequest(f"Invalid type for '{param}': expected an object.", param=param)
    for name in given:
        if name not in schema:
            raise InvalidRequest(f"Unknown variable '{name}': this prompt declares "
                                 f"{', '.join(sorted(schema)) or 'no variables'}.", param=f"{param}.{name}")
    values: dict[str, str] = {}
    for name, spec in schema.items():
        value = _unwrap(given[name]) if name in given else spec.default
        if value is None:
            if spec.required:
                raise InvalidRequest(f"Missing required variable '{name}'.", param=f"{param}.{name}")
            values[name] = ""
        elif not _has_type(value, spec.type):
            raise InvalidRequest(f"Invalid type for variable '{name}': expected a {spec.type}.",
                                 param=f"{param}.{name}")
        else:
            values[name] = _text(value)
    return values


def _unwrap(value: object) -> object:
    if isinstance(value, dict) and value.get("type") == "input_text" and isinstance(value.get("text"), str):
        return value["text"]
    return value


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
