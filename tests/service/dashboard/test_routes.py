"""The dashboard and docs routes without a browser: served from package data, outside the
OpenAPI document, through the service's middlewares, and never pointing at a CDN."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
from fastapi.testclient import TestClient

#: Any absolute URL in a page or attribute (http://, https://, protocol-relative //host).
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)


@pytest.mark.parametrize("path", ["/", "/kr/1", "/kr/999"])
def test_the_page_is_served_without_a_token_and_revalidated(client: TestClient, path: str) -> None:
    # The page itself holds no data: the token is asked for by the page, for the API.
    response = client.get(path, headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert '<script src="/static/dashboard.js" defer></script>' in response.text
    assert not EXTERNAL.search(response.text)


def test_a_key_result_page_needs_a_numeric_id(client: TestClient) -> None:
    response = client.get("/kr/abc", headers={"Authorization": ""})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("asset", "media_type"),
    [
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
        ("vendor/swagger-ui/swagger-ui-bundle.js", "text/javascript"),
        ("vendor/swagger-ui/swagger-ui.css", "text/css"),
        ("vendor/redoc/redoc.standalone.js", "text/javascript"),
    ],
)
def test_assets_come_from_the_package_with_etags(
    client: TestClient, asset: str, media_type: str
) -> None:
    packaged = files("service.dashboard").joinpath("static", *asset.split("/")).read_bytes()
    response = client.get(f"/static/{asset}", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.content == packaged
    again = client.get(f"/static/{asset}", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_assets_go_through_the_host_check_and_refuse_bodies(client: TestClient) -> None:
    assert client.get("/static/dashboard.js", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/static/nothing.js").status_code == 404
    posted = client.post("/static/dashboard.js", content=b"x" * 10)
    assert posted.status_code == 405


@pytest.mark.parametrize(
    ("path", "script"),
    [
        ("/docs", "/static/vendor/swagger-ui/swagger-ui-bundle.js"),
        ("/redoc", "/static/vendor/redoc/redoc.standalone.js"),
    ],
)
def test_the_api_docs_load_packaged_assets_only(client: TestClient, path: str, script: str) -> None:
    response = client.get(path, headers={"Authorization": ""})
    assert response.status_code == 200
    assert f'src="{script}"' in response.text
    assert "/openapi.json" in response.text
    assert not EXTERNAL.search(response.text), response.text


def test_the_pages_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc", "/kr/{key_result_id}"} & set(paths)
    assert not any(p.startswith("/static") for p in paths)
