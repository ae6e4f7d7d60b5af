"""Embeddings through a live server with the official SDK: float and base64, local and fake models."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from live import Live, Tenant


@pytest.fixture(scope="module")
def tenant(sqlite_server: Live) -> Tenant:
    return sqlite_server.new_tenant("embeddings-suite")


@pytest.mark.parametrize("model, dims", [("fake-embed", 8), ("proxied-embed", 8)])
def test_embeddings_float_and_base64_agree(sqlite_server: Live, tenant: Tenant, model: str, dims: int) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    as_float = sdk.embeddings.create(model=model, input=["alpha", "beta"], encoding_format="float")
    as_b64 = sdk.embeddings.create(model=model, input=["alpha", "beta"], encoding_format="base64")
    assert [d.index for d in as_float.data] == [0, 1] and as_float.model == model
    for f, b in zip(as_float.data, as_b64.data, strict=True):
        assert len(f.embedding) == dims
        assert isinstance(b.embedding, str)  # asked for explicitly, the SDK hands base64 back as it came
        decoded = np.frombuffer(base64.b64decode(b.embedding), dtype="<f4")
        assert np.allclose(f.embedding, decoded, atol=1e-6)
    assert as_float.usage.prompt_tokens > 0


def test_raw_base64_is_little_endian_float32(sqlite_server: Live, tenant: Tenant) -> None:
    r = httpx.post(sqlite_server.url + "/v1/embeddings", headers={"authorization": f"Bearer {tenant.member_key}"},
                   json={"model": "fake-embed", "input": "alpha", "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (8,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5


@pytest.mark.local_models
def test_local_embeddings_are_semantic(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    texts = ["How do I reset my password?", "I forgot my password and need to change it.",
             "The weather in Lisbon is sunny today."]
    out = sdk.embeddings.create(model="all-minilm-l6-v2", input=texts)  # the SDK asks for base64 by default
    vecs = np.array([d.embedding for d in out.data])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    assert out.usage.prompt_tokens > 10


@pytest.mark.parametrize("body, param", [
    ({"model": "fake-embed", "input": ""}, "input"),
    ({"model": "fake-embed", "input": []}, "input"),
    ({"model": "fake-embed", "input": ["ok", ""]}, "input"),
    ({"model": "fake-embed", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "fake-embed", "input": [[1, 2, 3]]}, "input"),
    ({"model": "fake-embed", "input": [1, 2.5]}, "input"),
    ({"model": "fake-embed", "input": [-1]}, "input"),
    ({"model": "fake-embed", "input": "x", "truncate": "yes"}, "truncate"),
    ({"model": "fake-embed", "input": "x", "dimensions": 3}, "dimensions"),
    ({"model": "fake-chat", "input": "x"}, "model"),
])
def test_embedding_errors(sqlite_server: Live, tenant: Tenant, body: dict[str, object], param: str) -> None:
    r = httpx.post(sqlite_server.url + "/v1/embeddings", json=body,
                   headers={"authorization": f"Bearer {tenant.member_key}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_embedding_model_is_404(sqlite_server: Live, tenant: Tenant) -> None:
    with pytest.raises(openai.NotFoundError):
        sqlite_server.sdk(tenant.member_key).embeddings.create(model="text-embedding-9", input="x")


LONG_TEXT = "The tenant asked about invoices and receipts. " * 40  # ~320 word-pieces, over the model's 256


def test_token_ids_for_a_model_without_a_known_tokenizer_ask_for_text(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    for model in ("fake-embed", "proxied-embed"):
        with pytest.raises(openai.BadRequestError) as info:
            sdk.embeddings.create(model=model, input=[[7592, 2088]])
        assert info.value.status_code == 400 and info.value.param == "input"
        assert "send the text" in info.value.message


@pytest.mark.local_models
def test_over_long_input_is_refused_naming_the_limit_and_index(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model="all-minilm-l6-v2", input=["short", LONG_TEXT])
    assert info.value.param == "input" and info.value.code == "context_length_exceeded"
    assert "input[1]" in info.value.message and "256-token limit" in info.value.message
    assert '"truncate": true' in info.value.message


@pytest.mark.local_models
def test_truncate_opts_into_embedding_the_first_tokens(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    out = sdk.embeddings.create(model="all-minilm-l6-v2", input=["short", LONG_TEXT], encoding_format="float",
                                extra_body={"truncate": True})
    assert [len(d.embedding) for d in out.data] == [384, 384]
    assert out.usage.prompt_tokens == 3 + 256  # [CLS] short [SEP], and the long text cut at the limit
    just_fits = sdk.embeddings.create(model="all-minilm-l6-v2", input="word " * 254, encoding_format="float")
    assert just_fits.usage.prompt_tokens == 256  # the limit itself needs no opt-in


@pytest.mark.local_models
def test_token_ids_embed_like_their_text(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    by_text = sdk.embeddings.create(model="all-minilm-l6-v2", input="hello world", encoding_format="float")
    by_ids = sdk.embeddings.create(model="all-minilm-l6-v2", input=[7592, 2088], encoding_format="float")
    nested = sdk.embeddings.create(model="all-minilm-l6-v2", input=[[7592, 2088], [7592]], encoding_format="float")
    assert np.allclose(by_text.data[0].embedding, by_ids.data[0].embedding, atol=1e-5)
    assert np.allclose(by_ids.data[0].embedding, nested.data[0].embedding, atol=1e-5)
    assert len(nested.data) == 2 and by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == 4


@pytest.mark.local_models
def test_token_ids_are_checked_against_the_vocabulary_and_the_limit(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    with pytest.raises(openai.BadRequestError) as outside:
        sdk.embeddings.create(model="all-minilm-l6-v2", input=[[7592], [2088, 99999]])
    assert outside.value.param == "input" and "input[1][1] is token id 99999" in outside.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.embeddings.create(model="all-minilm-l6-v2", input=[[2088] * 300])
    assert "input[0] is 302 tokens long" in too_long.value.message
    cut = sdk.embeddings.create(model="all-minilm-l6-v2", input=[[2088] * 300], extra_body={"truncate": True})
    assert cut.usage.prompt_tokens == 256
