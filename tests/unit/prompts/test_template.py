"""The renderer: parsing ``{{name}}`` and ``{% block %}``, refusing everything else, substituting values as text."""

from __future__ import annotations

import pytest

from tenantlm.errors import InvalidRequest
from tenantlm.prompts.compose import chat_body, compose, render
from tenantlm.prompts.models import bind, parse_schema, parse_template
from tenantlm.prompts.template import Block, Var, flatten, parse
from tenantlm.prompts.template import render as substitute

SCHEMA = parse_schema({"name": {"type": "string", "required": True},
                       "n": {"type": "number", "default": 3},
                       "loud": {"type": "boolean", "default": False},
                       "note": {"type": "string"}})


def test_parse_finds_text_placeholders_and_blocks() -> None:
    parts = parse("Hi {{ name }}!{% block tone %}Be kind to {{name}}.{% endblock %} bye", param="template")
    assert parts == ("Hi ", Var("name"), "!", Block("tone", ("Be kind to ", Var("name"), ".")), " bye")
    assert substitute(flatten(parts, {}), {"name": "Ada"}) == "Hi Ada!Be kind to Ada. bye"
    assert substitute(flatten(parts, {"tone": ("Be terse.",)}), {"name": "Ada"}) == "Hi Ada!Be terse. bye"


@pytest.mark.parametrize("source", [
    "{{ 7*7 }}", "{{ name.upper() }}", "{{ name|e }}", "{% for x in y %}{% endfor %}", "{% block a %}",
    "{% endblock %}", "{% block a %}{% block b %}{% endblock %}{% endblock %}",
    "{% block a %}x{% endblock %}{% block a %}y{% endblock %}", "{% block a %}x{% endblock b %}",
    "{% include 'x' %}",
])  # fmt: skip
def test_anything_but_names_and_blocks_is_refused_with_param(source: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(source, param="template")
    assert err.value.param == "template"


def test_a_value_is_text_never_template_code() -> None:
    parts = flatten(parse("Dear {{name}}, {% block b %}{% endblock %}", param="t"), {})
    for value in ("{{ 7*7 }}", "{% block b %}x{% endblock %}", "{{name}}", "{{ __import__('os') }}", "{name}", "}{"):
        assert substitute(parts, {"name": value}) == f"Dear {value}, "


def test_literal_braces_in_a_template_stay_literal() -> None:
    parts = flatten(parse('JSON: {"a": {{name}}} {0} {x.y} }{ {{', param="t"), {})
    assert substitute(parts, {"name": "1"}) == 'JSON: {"a": 1} {0} {x.y} }{ {{'


def test_bind_applies_defaults_checks_types_and_names_the_variable() -> None:
    assert bind(SCHEMA, {"name": "Ada"}) == {"name": "Ada", "n": "3", "loud": "false", "note": ""}
    assert bind(SCHEMA, {"name": {"type": "input_text", "text": "Bo"}, "n": 2.5, "loud": True})["loud"] == "true"
    cases = [({}, "prompt.variables.name"), ({"name": "a", "colour": "red"}, "prompt.variables.colour"),
             ({"name": 1}, "prompt.variables.name"), ({"name": "a", "n": "3"}, "prompt.variables.n"),
             ({"name": "a", "n": True}, "prompt.variables.n"), ({"name": "a", "loud": "yes"}, "prompt.variables.loud"),
             ("name=a", "prompt.variables")]
    for given, param in cases:
        with pytest.raises(InvalidRequest) as err:
            bind(SCHEMA, given)
        assert err.value.param == param and err.value.status == 400


@pytest.mark.parametrize(("spec", "param"), [
    ({"x": {"type": "int"}}, "variables.x.type"), ({"x": {"type": "number", "default": "1"}}, "variables.x.default"),
    ({"x": {"type": "string", "required": "yes"}}, "variables.x.required"),
    ({"1x": {"type": "string"}}, "variables.1x"),
    ({"x": {"type": "string", "min": 1}}, "variables.x.min"),
])  # fmt: skip
def test_a_bad_schema_is_refused(spec: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_schema(spec)
    assert err.value.param == param


def test_message_templates_keep_roles_and_blocks_across_messages() -> None:
    stored, _shape = parse_template([{"role": "system", "content": "S {% block a %}A{% endblock %}"},
                                    {"role": "user", "content": "U {{name}}"}])
    resolved = compose(prompt_id="pmpt_x", version=2, template=stored, schema=SCHEMA, model=None,
                       override_version=None, override=None)
    out = render(resolved, {"name": "Ada"})
    assert out.instructions is None
    assert out.messages == [{"role": "system", "content": "S A"}, {"role": "user", "content": "U Ada"}]
    assert out.echo == {"id": "pmpt_x", "version": "2", "variables": {"name": "Ada"}}
    with pytest.raises(InvalidRequest) as err:
        parse_template([{"role": "tool", "content": "x"}])
    assert err.value.param == "template[0].role"


BASE = ("You help {{name}}.{% block policy %} Refunds take 30 days.{% endblock %}"
        "{% block tone %} Be formal.{% endblock %}")


def test_an_override_fills_blocks_or_replaces_the_template() -> None:
    plain = compose(prompt_id="p", version=1, template=BASE, schema=SCHEMA, model={"temperature": 0.1},
                    override_version=None, override=None)
    assert render(plain, {"name": "Ada"}).instructions == "You help Ada. Refunds take 30 days. Be formal."
    assert plain.use.override_version is None and plain.model == {"temperature": 0.1}
    filled = compose(prompt_id="p", version=1, template=BASE, schema=SCHEMA, model=None, override_version=4,
                     override={"blocks": {"policy": " Refunds for {{name}} take 14 days.", "absent": "x"}})
    assert render(filled, {"name": "Ada"}).instructions == "You help Ada. Refunds for Ada take 14 days. Be formal."
    assert (filled.use.version, filled.use.override_version) == ("1", "4")
    whole = compose(prompt_id="p", version=1, template=BASE, schema=SCHEMA, model=None, override_version=2,
                    override={"template": "Only {{name}}."})
    assert render(whole, {"name": "{{ 7*7 }}"}).instructions == "Only {{ 7*7 }}."


def test_an_override_using_a_variable_the_pinned_version_lacks_is_a_400() -> None:
    narrow = parse_schema({"name": {"type": "string"}})
    with pytest.raises(InvalidRequest) as err:
        compose(prompt_id="p", version=1, template="{{name}}", schema=narrow, model=None, override_version=1,
                override={"template": "{{name}} {{note}}"})
    assert err.value.param == "prompt.version"


def test_chat_body_puts_the_prompt_first_fills_unset_settings_and_drops_the_reference() -> None:
    resolved = compose(prompt_id="p", version=1, template="Help {{name}}.", schema=SCHEMA,
                       model={"model": "m", "temperature": 0.3, "max_output_tokens": 50}, override_version=None,
                       override=None)
    rendered = render(resolved, {"name": "Ada"})
    body = chat_body({"prompt": {"id": "p"}, "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0},
                     rendered)
    assert body == {"model": "m", "temperature": 1.0, "max_tokens": 50,
                    "messages": [{"role": "system", "content": "Help Ada."}, {"role": "user", "content": "hi"}]}
    assert "max_tokens" not in chat_body({"max_completion_tokens": 9, "messages": []}, rendered)
    assert chat_body({"messages": "not a list"}, rendered)["messages"] == "not a list"  # left for validation
