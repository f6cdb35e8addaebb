"""The dashboard (`/`, `/kr/{id}`) and the API docs (`/docs`, `/redoc`), all served from
files shipped in the package: nothing is fetched from a CDN, so they work offline.

None of these routes is part of the API: they stay out of the OpenAPI document. The page
itself holds no data; its script reads the progress API with the token the user gives.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.pagination import Id

STATIC_PREFIX = "/static"
_VENDOR = f"{STATIC_PREFIX}/vendor"
_FAVICON = f"{STATIC_PREFIX}/favicon.svg"
#: The page changes with each release while its URL does not: revalidate every time (the
#: static files answer 304 to their ETags, so a revalidation is cheap).
_NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@cache
def _page() -> bytes:
    return files("service.dashboard").joinpath("static", "index.html").read_bytes()


@router.get("/", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """The dashboard page: the current period's OKR pyramid, live."""
    return HTMLResponse(_page(), headers=_NO_CACHE)


@router.get("/kr/{key_result_id}", response_class=HTMLResponse)
async def key_result_page(key_result_id: Id) -> HTMLResponse:  # noqa: ARG001 - the script reads it
    """A key result's page: its burn-up chart and the records behind its value."""
    return HTMLResponse(_page(), headers=_NO_CACHE)


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard, its assets and the offline `/docs` and `/redoc` on `app`
    (created with `docs_url=None, redoc_url=None`)."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{_VENDOR}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{_VENDOR}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=_FAVICON,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{_VENDOR}/redoc/redoc.standalone.js",
            redoc_favicon_url=_FAVICON,
            # Google Fonts is a CDN too: ReDoc falls back to the system's fonts.
            with_google_fonts=False,
        )

    app.include_router(router)
    # A mount is not a route of the OpenAPI document; `packages=` finds the files wherever
    # the package is installed (a wheel, an editable install).
    app.mount(
        STATIC_PREFIX,
        StaticFiles(packages=[("service.dashboard", "static")]),
        name="static",
    )
