"""Wire schemas of the prompt admin bodies: their shape in the OpenAPI description, unknown fields refused. The
template, variables schema and model settings are checked in depth by ``prompts.models``, which names the exact field
in its 400 (``template[0].role``, ``variables.name.type``, ``blocks.policy``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tenantlm.api.admin.protocol import Body

TEMPLATE = ("Instructions text, or messages [{\"role\": \"system\"|\"developer\"|\"user\"|\"assistant\", "
            "\"content\"}], with {{variable}} placeholders and {% block name %}default text{% endblock %} blocks.")
VARIABLES = ('{"name": {"type": "string"|"number"|"boolean", "required": bool, "default": ..., "description": ...}}; '
             "every placeholder must be declared here.")
MODEL = 'Model settings a request does not set itself: {"model", "temperature", "top_p", "max_output_tokens"}.'


class PromptVersionCreate(Body):
    template: Any = Field(description=TEMPLATE)
    variables: dict[str, Any] | None = Field(None, description=VARIABLES)
    model: dict[str, Any] | None = Field(None, description=MODEL)


class PromptCreate(PromptVersionCreate):
    name: str = Field(description="What the prompt is for (1-200 characters).")


class LabelPut(Body):
    version: str | int = Field(description='The version the label points at, e.g. "2".')


class OverridePut(Body):
    """Exactly one of the two."""

    blocks: dict[str, Any] | None = Field(None, description="Text for blocks the base prompt declares, by name "
                                                            "(with {{variable}} placeholders of the base's variables).")
    template: Any = Field(None, description="A whole template replacing the base's. " + TEMPLATE)
