"""The interactive API reference at ``/docs``: Swagger UI served from the installed package, so it works offline.

FastAPI's default page loads Swagger UI's script and stylesheet from a CDN, and is blank without the internet. Here
the page is FastAPI's own (``get_swagger_ui_html``) pointed at the Swagger UI files that the ``fastapi-offline``
package ships (Swagger UI 5, which reads the OpenAPI 3.1 documents FastAPI writes), mounted under ``/docs/assets``.
Swagger UI's online validator (a badge fetched from a public service) is turned off, so the page makes no request
to another host. ReDoc is not served.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def swagger_ui_dir() -> str:
    """The folder of Swagger UI's files (``swagger-ui-bundle.js``, ``swagger-ui.css``, ``favicon.png``)."""
    return str(files("fastapi_offline") / "static")


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` for ``app.openapi_url`` with every asset from this server."""
    app.mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")
    parameters = {**swagger_ui_default_parameters, "validatorUrl": None}

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API reference",
                                   swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
                                   swagger_ui_parameters=parameters)
