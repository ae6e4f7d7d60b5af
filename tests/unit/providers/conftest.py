"""Fixtures for the provider tests: fake upstreams over real HTTP, attempt recorders, optional-model guards."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tenantlm.providers.base import Attempt
from tenantlm.providers.fake_server import FakeServerThread
from tenantlm.settings import ProviderConfig


def _require_module(name: str) -> None:
    """Skip when an optional model runtime is missing; under CI=true a missing runtime is a failure."""
    if importlib.util.find_spec(name) is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not installed (needed by the local model tests)")
    pytest.skip(f"{name} is not installed")


@pytest.fixture(scope="session")
def require_module() -> Callable[[str], None]:
    """``require_module("llama_cpp")``: skip (fail under CI=true) when an optional runtime is missing."""
    return _require_module


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServerThread]:
    """A fake OpenAI-compatible upstream (8 tokens per reply, 8-d embeddings) shared by a test module."""
    with FakeServerThread(ProviderConfig(name="upstream", type="fake", tokens=8)) as server:
        yield server


@pytest.fixture
def make_upstream() -> Iterator[Callable[..., FakeServerThread]]:
    """Start extra fake upstreams with their own settings (latency, api key...); stopped after the test."""
    servers: list[FakeServerThread] = []

    def start(**fields: Any) -> FakeServerThread:
        config = ProviderConfig(name=fields.pop("name", "upstream"), type="fake", **fields)
        servers.append(FakeServerThread(config).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def closed_port_url() -> str:
    """A base URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class AttemptLog(list[Attempt]):
    def __call__(self, attempt: Attempt) -> None:
        self.append(attempt)

    @property
    def outcomes(self) -> list[str]:
        return [a.outcome for a in self]

    @property
    def statuses(self) -> list[int | None]:
        return [a.status for a in self]


@pytest.fixture
def attempts() -> AttemptLog:
    return AttemptLog()

