"""The cache's policy (settings and plan defaults, validation naming the field) and its keys (what the key covers,
that it is per tenant and per secret, what the semantic cache compares)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tenantlm.errors import InvalidRequest
from tenantlm.respcache import keys
from tenantlm.respcache.policy import OFF, CachePolicy, check_cache, effective_policy, plan_policy, request_threshold
from tenantlm.tenancy.limits import TENANT_FIELDS, check_overrides, tenant_limits

BODY: dict[str, Any] = {"model": "gpt", "messages": [{"role": "system", "content": "be brief"},
                                                     {"role": "user", "content": "hello   there"}],
                        "temperature": 0}


def test_partial_objects_are_cleaned_and_overlay_field_by_field() -> None:
    assert check_cache({"exact": True, "semantic_threshold": 1}) == {"exact": True, "semantic_threshold": 1.0}
    plan = plan_policy({"exact": True, "semantic_threshold": 0.97})
    assert plan == CachePolicy(exact=True, semantic_threshold=0.97)
    assert effective_policy(plan, {}) == plan
    assert effective_policy(plan, {"cache": {"exact": False, "semantic": True}}) == \
        CachePolicy(exact=False, semantic=True, semantic_threshold=0.97)
    assert effective_policy(None, {}) == OFF and not OFF.enabled
    assert plan_policy(None) is None


@pytest.mark.parametrize(("value", "param"), [
    ([], "settings.cache"),
    ({"exact": 1}, "settings.cache.exact"),
    ({"personal": None}, "settings.cache.personal"),
    ({"semantic_threshold": True}, "settings.cache.semantic_threshold"),
    ({"semantic_threshold": 0.49}, "settings.cache.semantic_threshold"),
    ({"semantic_threshold": float("nan")}, "settings.cache.semantic_threshold"),
    ({"other": True}, "settings.cache.other"),
])
def test_invalid_objects_name_the_field(value: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_cache(value)
    assert err.value.param == param


def test_a_plans_limits_carry_a_cache_policy() -> None:
    limits = check_overrides({"rpm": 5, "cache": {"semantic": True}}, allowed=TENANT_FIELDS, param="limits")
    effective = tenant_limits(limits, {})
    assert effective.cache == CachePolicy(semantic=True)
    assert hash(effective)  # the gate caches limit sets by value
    assert tenant_limits({"rpm": 5}, {}).cache is None  # the built-in plans name no cache: off
    with pytest.raises(InvalidRequest) as err:
        check_overrides({"cache": {"exact": "on"}}, allowed=TENANT_FIELDS, param="limits")
    assert err.value.param == "limits.cache.exact"


def test_request_threshold_header() -> None:
    assert request_threshold(None) is None
    assert request_threshold("0.97") == 0.97
    for bad in ("high", "1.5", "-0.1", "nan", "inf"):
        with pytest.raises(InvalidRequest) as err:
            request_threshold(bad)
        assert err.value.param == "x-tenantlm-cache-threshold"


def test_what_is_cacheable() -> None:
    assert keys.cacheable(BODY)
    assert keys.cacheable({**BODY, "n": 1})
    assert keys.cacheable({**BODY, "stream": True, "stream_options": {"include_usage": True}})
    assert not keys.cacheable({**BODY, "n": 2})
    assert not keys.cacheable({**BODY, "tools": [{"type": "function"}]})
    assert not keys.cacheable({**BODY, "tool_choice": "auto"})
    assert not keys.cacheable({**BODY, "functions": [{"name": "f"}]})


def test_the_key_covers_what_changes_the_answer_and_nothing_else() -> None:
    secret = os.urandom(32)

    def key(body: dict[str, Any], *, tenant: str = "ten_a", partition: str | None = None,
            model: str = "catalog-gpt", with_secret: bytes = secret) -> str:
        return keys.entry_key(with_secret, tenant_id=tenant, partition=partition,
                              request=keys.normalised(body, model))

    base = key(BODY)
    assert key({**BODY, "user": "u1", "stream_options": None, "metadata": {"x": 1}}) == base
    assert key({**BODY, "model": "an-alias"}) == base  # the model is the resolved catalog entry
    assert key({**BODY, "temperature": 0.5}) != base
    assert key({**BODY, "seed": 1}) != base
    assert key({**BODY, "vendor_extension": True}) != base  # unknown fields may change the answer
    assert key(BODY, model="other-model") != base
    assert key(BODY, tenant="ten_b") != base
    assert key(BODY, with_secret=os.urandom(32)) != base
    assert key(BODY, partition="alice") != base
    assert key(BODY, partition="alice") != key(BODY, partition="bob")


def test_semantic_text_is_the_last_user_message_of_modest_length() -> None:
    assert keys.semantic_text(BODY) == "hello there"
    parts = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    assert keys.semantic_text({"messages": [parts]}) == "a b"
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    assert keys.semantic_text({"messages": [image]}) is None
    assert keys.semantic_text({"messages": [{"role": "assistant", "content": "hi"}]}) is None
    assert keys.semantic_text({"messages": [{"role": "user", "content": "x" * 1001}]}) is None


def test_a_semantic_space_is_everything_but_the_last_user_message() -> None:
    secret = os.urandom(32)

    def space(body: dict[str, Any], tenant: str = "ten_a") -> str:
        return keys.space_key(secret, tenant_id=tenant, partition=None, request=keys.normalised(body, "m"))

    reworded = {**BODY, "messages": [BODY["messages"][0], {"role": "user", "content": "hi, hello"}]}
    assert space(reworded) == space(BODY)
    other_system = {**BODY, "messages": [{"role": "system", "content": "be long"}, BODY["messages"][1]]}
    assert space(other_system) != space(BODY)
    assert space({**BODY, "temperature": 1}) != space(BODY)
    assert space(BODY, tenant="ten_b") != space(BODY)
