"""Attribute filters: a table of what matches, the laws between operators over random attributes, and the 400s."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tenantlm.errors import InvalidRequest
from tenantlm.knowledge.filters import (
    MAX_COMPARISONS,
    MAX_DEPTH,
    Comparison,
    Compound,
    filter_predicate,
    keys_of,
    parse_attributes,
    parse_filter,
)


def cmp(type_: str, key: str, value: Any) -> dict[str, Any]:
    return {"type": type_, "key": key, "value": value}


ATTRIBUTES = {"author": "Ada", "year": 2021, "score": 4.5, "draft": False, "tag": "b"}

MATCHES = [
    # numbers compare as numbers, whatever their JSON spelling
    (cmp("eq", "year", 2021), True), (cmp("eq", "year", 2021.0), True), (cmp("eq", "year", 2020), False),
    (cmp("gt", "year", 2020), True), (cmp("gt", "year", 2021), False), (cmp("gte", "year", 2021), True),
    (cmp("lt", "score", 5), True), (cmp("lte", "score", 4.5), True), (cmp("lt", "score", 4.5), False),
    # strings compare as strings: no coercion between "2021" and 2021, ordering by code point
    (cmp("eq", "year", "2021"), False), (cmp("gt", "year", "1"), False), (cmp("eq", "author", "Ada"), True),
    (cmp("eq", "author", "ada"), False), (cmp("gt", "tag", "a"), True), (cmp("lt", "tag", "B"), False),
    (cmp("gte", "author", "Ada"), True), (cmp("lt", "author", 3), False),
    # booleans only equal booleans (false is not 0)
    (cmp("eq", "draft", False), True), (cmp("eq", "draft", 0), False), (cmp("ne", "draft", True), True),
    (cmp("eq", "year", True), False),
    # in / nin: any of the items, strings and numbers mixed
    (cmp("in", "author", ["Bob", "Ada"]), True), (cmp("in", "year", ["2021", 2022]), False),
    (cmp("in", "year", [2021.0]), True), (cmp("nin", "author", ["Bob"]), True), (cmp("nin", "tag", ["a", "b"]), False),
    (cmp("in", "draft", [0, "false"]), False),
    # a missing attribute: only the negations hold
    (cmp("eq", "missing", "x"), False), (cmp("gt", "missing", 0), False), (cmp("in", "missing", ["x"]), False),
    (cmp("ne", "missing", "x"), True), (cmp("nin", "missing", ["x"]), True),
    # compounds
    ({"type": "and", "filters": [cmp("eq", "author", "Ada"), cmp("gte", "year", 2021)]}, True),
    ({"type": "and", "filters": [cmp("eq", "author", "Ada"), cmp("gt", "year", 2021)]}, False),
    ({"type": "or", "filters": [cmp("eq", "author", "Bob"), cmp("gt", "year", 2021)]}, False),
    ({"type": "or", "filters": [cmp("eq", "author", "Bob"), {"type": "and", "filters": [
        cmp("eq", "draft", False), cmp("in", "tag", ["b"])]}]}, True),
]


@pytest.mark.parametrize(("body", "expected"), MATCHES)
def test_what_matches(body: dict[str, Any], expected: bool) -> None:
    assert parse_filter(body).matches(ATTRIBUTES) is expected


def test_a_file_without_attributes() -> None:
    assert parse_filter(cmp("ne", "k", 1)).matches(None)
    assert not parse_filter(cmp("eq", "k", 1)).matches({})


VALUES: list[Any] = ["a", "b", "B", "", "2", 2, 2.0, 3, -1.5, 0, True, False]


def random_attributes(rng: random.Random) -> dict[str, Any]:
    return {key: rng.choice(VALUES) for key in ("x", "y", "z") if rng.random() < 0.7}


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth < 3 and rng.random() < 0.35:
        return {"type": rng.choice(["and", "or"]),
                "filters": [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    key = rng.choice(["x", "y", "z", "w"])
    type_ = rng.choice(["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"])
    if type_ in ("in", "nin"):
        return cmp(type_, key, [rng.choice(VALUES[:-2]) for _ in range(rng.randint(1, 3))])
    value = rng.choice(VALUES if type_ in ("eq", "ne") else VALUES[:-2])
    return cmp(type_, key, value)


@pytest.mark.parametrize("seed", range(10))
def test_laws_between_the_operators(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        attributes = random_attributes(rng)
        key, value = rng.choice(["x", "y", "z", "w"]), rng.choice(VALUES)
        items = [rng.choice(VALUES[:-2]) for _ in range(rng.randint(1, 3))]
        assert parse_filter(cmp("ne", key, value)).matches(attributes) is not parse_filter(
            cmp("eq", key, value)).matches(attributes)
        assert parse_filter(cmp("nin", key, items)).matches(attributes) is not parse_filter(
            cmp("in", key, items)).matches(attributes)
        assert parse_filter(cmp("in", key, items)).matches(attributes) is any(
            parse_filter(cmp("eq", key, item)).matches(attributes) for item in items)
        if not isinstance(value, bool):
            gte = parse_filter(cmp("gte", key, value)).matches(attributes)
            assert gte is (parse_filter(cmp("gt", key, value)).matches(attributes)
                           or parse_filter(cmp("eq", key, value)).matches(attributes))
            lt = parse_filter(cmp("lt", key, value)).matches(attributes)
            same_kind = key in attributes and type(attributes[key]) is not bool and (
                isinstance(attributes[key], str) == isinstance(value, str))
            assert lt is (same_kind and not gte)  # lt and gte split the values of the same kind, and only those
        body = random_filter(rng)
        parsed = parse_filter(body)
        if isinstance(parsed, Compound):
            children = [f.matches(attributes) for f in parsed.filters]
            assert parsed.matches(attributes) is (all(children) if parsed.type == "and" else any(children))
        assert parse_filter(parsed.to_json()) == parsed


P = "filters"


@pytest.mark.parametrize(("body", "param", "words"), [
    ("author", P, "Invalid type for 'filters': expected an object"),
    ({"key": "a", "value": 1}, f"{P}.type", "Missing required parameter: 'filters.type'."),
    (cmp("like", "a", "x"), f"{P}.type", "Invalid value: 'like'. Supported values are: 'eq', 'ne', 'gt', 'gte', "
                                         "'lt', 'lte', 'in', 'nin', 'and' and 'or'."),
    ({"type": "eq", "value": 1}, f"{P}.key", "Missing required parameter: 'filters.key'."),
    ({"type": "eq", "key": "a"}, f"{P}.value", "Missing required parameter: 'filters.value'."),
    ({**cmp("eq", "a", 1), "extra": 1}, f"{P}.extra", "Unknown parameter: 'filters.extra'."),
    (cmp("eq", 5, 1), f"{P}.key", "expected a string, but got an integer instead"),
    (cmp("eq", "", 1), f"{P}.key", "expected an attribute key of 1 to 64 characters"),
    (cmp("eq", "k" * 65, 1), f"{P}.key", "but got one of 65"),
    (cmp("eq", "a", ["x"]), f"{P}.value", "(use 'in' to match any of several values)"),
    (cmp("ne", "a", ["x"]), f"{P}.value", "(use 'nin' to exclude several values)"),
    (cmp("eq", "a", None), f"{P}.value", "expected a string, a number or a boolean, but got null instead"),
    (cmp("eq", "a", {"x": 1}), f"{P}.value", "but got an object instead"),
    (cmp("gt", "a", True), f"{P}.value", "expected a number or a string (booleans support only 'eq' and 'ne')"),
    (cmp("lt", "a", [1]), f"{P}.value", "expected a string, a number or a boolean for 'lt'"),
    (cmp("gte", "a", float("nan")), f"{P}.value", "expected a finite number"),
    (cmp("eq", "a", float("inf")), f"{P}.value", "expected a finite number"),
    (cmp("in", "a", "x"), f"{P}.value", "expected an array of strings and numbers for 'in'"),
    (cmp("nin", "a", []), f"{P}.value", "expected at least one value for 'nin'"),
    (cmp("in", "a", ["x", True]), f"{P}.value[1]", "booleans support only 'eq' and 'ne'"),
    (cmp("in", "a", ["x", ["y"]]), f"{P}.value[1]", "but got an array instead"),
    ({"type": "and"}, f"{P}.filters", "Missing required parameter: 'filters.filters'."),
    ({"type": "or", "filters": []}, f"{P}.filters", "expected at least one filter, but got an empty array"),
    ({"type": "or", "filters": {}}, f"{P}.filters", "expected an array, but got an object instead"),
    ({"type": "and", "filters": [cmp("eq", "a", 1)], "key": "a"}, f"{P}.key", "Unknown parameter: 'filters.key'."),
    ({"type": "and", "filters": [cmp("eq", "a", 1), {"type": "or", "filters": [cmp("gt", "b", False)]}]},
     f"{P}.filters[1].filters[0].value", "Invalid type for 'filters.filters[1].filters[0].value'"),
    ({"type": "and", "filters": [cmp("eq", "a", 1), 7]}, f"{P}.filters[1]", "expected an object"),
])
def test_bad_filters_are_400s_naming_the_place(body: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_filter(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert words in caught.value.message


def nested(depth: int) -> dict[str, Any]:
    body: dict[str, Any] = cmp("eq", "a", 1)
    for _ in range(depth):
        body = {"type": "and", "filters": [body]}
    return body


def test_nesting_and_size_limits() -> None:
    assert parse_filter(nested(MAX_DEPTH)).matches({"a": 1})
    with pytest.raises(InvalidRequest, match=f"nested at most {MAX_DEPTH} deep"):
        parse_filter(nested(MAX_DEPTH + 1))
    with pytest.raises(InvalidRequest, match=f"nested at most {MAX_DEPTH} deep"):
        parse_filter(nested(5000))  # refused long before Python's recursion limit
    many = {"type": "or", "filters": [cmp("eq", "a", i) for i in range(MAX_COMPARISONS)]}
    assert parse_filter(many).matches({"a": MAX_COMPARISONS - 1})
    many["filters"].append(cmp("eq", "a", -1))
    with pytest.raises(InvalidRequest, match=f"at most {MAX_COMPARISONS} comparisons"):
        parse_filter(many)


def test_parsed_shapes_and_helpers() -> None:
    parsed = parse_filter({"type": "or", "filters": [cmp("in", "b", ["x", 1]), cmp("eq", "a", True),
                                                       {"type": "and", "filters": [cmp("lt", "b", 3)]}]})
    assert parsed == Compound("or", (Comparison("in", "b", ("x", 1)), Comparison("eq", "a", True),
                                     Compound("and", (Comparison("lt", "b", 3),))))
    assert keys_of(parsed) == ["b", "a"]
    assert filter_predicate(None)({"anything": 1}) and filter_predicate(None)(None)
    assert filter_predicate(parsed)({"a": True}) and not filter_predicate(parsed)({"a": False})


def test_attributes_are_checked_on_their_way_in() -> None:
    good = {"author": "Ada", "year": 2021, "score": 4.5, "draft": False, "k" * 64: "v" * 512}
    assert parse_attributes(good) == good
    assert parse_attributes(None) == {}
    bad: list[tuple[Any, str, str]] = [
        ([], "attributes", "expected an object"),
        ({f"k{i}": i for i in range(17)}, "attributes", "at most 16 properties"),
        ({"k" * 65: 1}, "attributes." + "k" * 65, "1 to 64 characters"),
        ({"": 1}, "attributes.", "1 to 64 characters"),
        ({"a": "v" * 513}, "attributes.a", "string too long. Expected a string with maximum length 512"),
        ({"a": None}, "attributes.a", "but got null instead"),
        ({"a": [1]}, "attributes.a", "but got an array instead"),
        ({"a": float("nan")}, "attributes.a", "expected a finite number"),
    ]
    for body, param, words in bad:
        with pytest.raises(InvalidRequest) as caught:
            parse_attributes(body)
        assert (caught.value.param, words in caught.value.message) == (param, True), caught.value.message
