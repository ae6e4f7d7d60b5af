"""/docs works offline: Swagger UI's page, script, stylesheet and icon all come from this server, none from a CDN."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

from live import Live

EXPECTED_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                  ".png": ("image/png",), ".json": ("application/json",)}


def test_docs_page_and_its_assets_are_served_locally(sqlite_server: Live) -> None:
    page = httpx.get(sqlite_server.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "SwaggerUIBundle" in html
    assert not re.search(r"(https?:)?//[\w.-]+", html), "the page names another host"
    assert '"validatorUrl": null' in html  # Swagger UI's online validator badge would fetch from a public host
    urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(urls) == 4  # stylesheet, icon, script, the OpenAPI document
    for url in urls:
        absolute = urljoin(sqlite_server.url + "/docs", url)
        assert urlsplit(absolute).netloc == urlsplit(sqlite_server.url).netloc
        r = httpx.get(absolute)
        assert r.status_code == 200, url
        suffix = "." + url.rsplit(".", 1)[-1]
        assert r.headers["content-type"].split(";")[0] in EXPECTED_TYPES[suffix], (url, r.headers["content-type"])
        assert len(r.content) > 1000, url
    assert httpx.get(sqlite_server.url + "/openapi.json").json()["openapi"].startswith("3.1")


def test_redoc_is_not_served(sqlite_server: Live) -> None:
    assert httpx.get(sqlite_server.url + "/redoc").status_code == 404
