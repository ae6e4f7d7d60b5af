"""Wire schemas of the OpenAI endpoints. They validate what the gateway itself relies on and let every other field
through untouched (``extra="allow"``), so provider features such as ``tools`` or ``response_format`` pass along."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False  # "yes", 1 or "true" are refused, as OpenAI refuses them
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    user: str | None = None
    safety_identifier: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v


class EmbeddingRequest(BaseModel):
    """``input`` is text (a string or an array of strings) or token ids (an array of ids or an array of such arrays,
    accepted by models whose tokenizer the server runs). ``truncate`` is TenantLM's extension: true embeds the first
    tokens of an input over the model's limit instead of refusing it (docs/operations.md)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    truncate: bool = Field(default=False, strict=True)

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, v: Any) -> Any:
        """Checked on the JSON as sent (the service reads that, not a coerced copy): no floats, booleans or numeric
        strings passing for token ids."""
        if isinstance(v, str):
            if not v:
                raise ValueError("input must not be empty")
            return v
        if not isinstance(v, list) or not v:
            raise ValueError("input must be a string, an array of strings, an array of token ids or an array of "
                             "token-id arrays, and not empty")
        if len(v) > 2048:
            raise ValueError("at most 2048 inputs per request")
        if all(isinstance(item, str) for item in v):
            if any(item == "" for item in v):
                raise ValueError("inputs must not be empty strings")
            return v
        if all(_is_token(item) for item in v):
            return v
        for i, row in enumerate(v):
            if not isinstance(row, list) or not row or not all(_is_token(t) for t in row):
                raise ValueError(f"input[{i}] must be a non-empty string or a non-empty array of token ids (integers "
                                 "from 0); strings and token ids cannot be mixed")
        return v


def _is_token(value: Any) -> bool:
    return type(value) is int and value >= 0
