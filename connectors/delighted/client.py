"""A thin httpx client for the Delighted REST API v1.

One method call is one HTTP request and maps every failure onto the connector error
groups (`connectors.errors`); it never retries: the caller wraps each call in the run's
`RetryPolicy`. Messages never contain the API key (it travels only in the Basic auth
header, and every message is redacted anyway as a second line of defence).
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from connectors.errors import (
    AuthError,
    ConfigError,
    RateLimitedError,
    RetriableError,
    SourceDataError,
)
from connectors.hosts import GuardedBackend, HostPolicy
from connectors.retry import retry_after_seconds

#: Delighted's documented maximum for `per_page` (https://delighted.com/docs/api).
MAX_PER_PAGE = 100

_REDACTED = "[redacted]"

#: Query parameters as pairs: `expand[]` may repeat, so a dict will not do.
_Params = list[tuple[str, str | int | float | bool | None]]


class DelightedClient:
    """Authenticated access to the two endpoints the connector uses.

    The key goes only to hosts `policy` allows: `base_url` is checked before the first
    request and every connection when it is opened (`connectors.hosts.GuardedBackend`);
    redirects are not followed (httpx's default, kept).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float,
        policy: HostPolicy,
        ca_bundle: str | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._policy = policy
        self._base_url_checked = False
        # An SSLContext built from the bundle is what httpx does with `verify=<path>`;
        # building it here avoids httpx 0.28's deprecation warning for string paths.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        )
        transport = httpx.HTTPTransport(verify=verify)
        # httpx takes no network backend of its own; its pool (httpcore) does, and connects
        # through it. tests/connectors/delighted pins that the guard is in the path.
        transport._pool._network_backend = GuardedBackend(policy)
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            follow_redirects=False,
            # Delighted: HTTP Basic with the API key as user name and an empty password.
            auth=httpx.BasicAuth(api_key, ""),
            timeout=timeout_seconds,
            verify=verify,
            headers={"Accept": "application/json", "User-Agent": "okr-sync"},
        )

    def list_survey_responses(
        self,
        *,
        updated_since: int,
        updated_until: int,
        page: int,
        per_page: int,
        by_creation: bool = False,
    ) -> list[Any]:
        """One page of `GET /survey_responses.json`, person expanded: oldest `updated_at`
        first within `updated_since..updated_until`, or with `by_creation` oldest first by
        creation within `since..until` (the same bounds, applied to `created_at`).

        Both bounds are unix seconds and inclusive on Delighted's side.
        """
        params: _Params = (
            [("since", updated_since), ("until", updated_until), ("order", "asc")]
            if by_creation
            else [
                ("updated_since", updated_since),
                ("updated_until", updated_until),
                ("order", "asc:updated_at"),
            ]
        )
        params += [("per_page", per_page), ("page", page), ("expand[]", "person")]
        body = self._get_json("/survey_responses.json", params)
        if not isinstance(body, list):
            raise SourceDataError(
                "Delighted GET /survey_responses.json: expected a JSON list, "
                f"got {type(body).__name__}"
            )
        return body

    def metrics(self) -> dict[str, Any]:
        """`GET /metrics.json`: a cheap authenticated call, used as the credentials probe."""
        body = self._get_json("/metrics.json", None)
        if not isinstance(body, dict):
            raise SourceDataError(
                f"Delighted GET /metrics.json: expected a JSON object, got {type(body).__name__}"
            )
        return body

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def _get_json(self, path: str, params: _Params | None) -> Any:
        if not self._base_url_checked:
            # The stored URL may predate the policy: checked before the key leaves.
            self._policy.validate(self._base_url, field="base_url")
            self._base_url_checked = True
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise RetriableError(
                self._redact(f"Delighted GET {path} timed out ({type(exc).__name__})")
            ) from exc
        except httpx.TransportError as exc:
            # Only the type: the text tells a refused port from an unreachable one.
            raise RetriableError(f"Delighted GET {path} failed: {type(exc).__name__}") from exc
        self._raise_for_status(path, response)
        try:
            return response.json()
        except ValueError:
            # No chaining: the decoder's message quotes the body, which we do not echo.
            raise SourceDataError(f"Delighted GET {path}: response is not valid JSON") from None

    def _raise_for_status(self, path: str, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        where = f"Delighted GET {path} answered {status}"
        if status == 401:
            raise AuthError(f"{where}: the API key was rejected")
        if status == 403:
            # Documented as "API feature not available on your current plan": a person has
            # to act on the account, retrying cannot help.
            raise AuthError(f"{where}: the API is not available to this key or plan")
        if status == 429:
            raise RateLimitedError(
                f"{where}: rate limited",
                retry_after_seconds=retry_after_seconds(
                    response.headers.get("Retry-After"), response.headers.get("Date")
                ),
            )
        if status >= 500:
            raise RetriableError(where)
        # The body is not quoted: it may be anything (a proxy's page, another service).
        if status == 404:
            raise ConfigError(f"{where}: not found, check base_url")
        if 300 <= status < 400:
            raise ConfigError(f"{where}: a redirect, which is not followed; check base_url")
        raise ConfigError(f"{where}: request rejected")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, _REDACTED) if self._api_key else text
