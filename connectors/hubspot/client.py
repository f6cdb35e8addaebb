"""HubSpot API access through hubspot-api-client 12, with errors translated.

This is the only module that touches the SDK. It asks the SDK for the raw HTTP response
(`_preload_content=False`) and parses the JSON itself, so a malformed body becomes a
`SourceDataError` instead of a half-filled SDK model, and it turns every SDK or urllib3
failure into one of `connectors.errors`. It never retries: urllib3's own retries are
switched off and the caller wraps each call in the run's `RetryPolicy`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from hubspot import HubSpot
from hubspot.crm.objects.exceptions import ApiException as ObjectsApiException
from hubspot.crm.pipelines.exceptions import ApiException as PipelinesApiException
from urllib3.util.retry import Retry

from connectors.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    QuotaExceededError,
    RateLimitedError,
    RetriableError,
    SourceDataError,
)
from connectors.governor import Governor
from connectors.hosts import HostPolicy, guarded_pool_classes, quote_vendor
from connectors.retry import retry_after_seconds

_API_EXCEPTIONS = (ObjectsApiException, PipelinesApiException)

#: Governor lanes: every request counts against the account's burst limit; CRM search
#: requests also against search's own per-second limit.
LANE_ALL = "all"
LANE_SEARCH = "search"


@dataclass(frozen=True)
class Response:
    """A successful response: its JSON object and its headers (lower-cased names)."""

    body: dict[str, Any]
    headers: Mapping[str, str]


class HubSpotClient:
    """Thin, typed wrapper over the SDK calls the connector makes.

    Each method sends exactly one HTTP request, so the caller can put it under
    `RetryPolicy.call`. Error messages never contain the access token. The token goes only
    to hosts `policy` allows: `base_url` is checked before the first request and every
    connection when it is opened; redirects are not followed (see `connectors.hosts`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str,
        timeout_seconds: float,
        policy: HostPolicy,
        ca_bundle: str | None = None,
        governor: Governor | None = None,
    ) -> None:
        self._token = access_token
        self._governor = governor
        self._timeout = timeout_seconds
        self._base_url = base_url
        self._policy = policy
        self._base_url_checked = False
        options: dict[str, Any] = {
            "access_token": access_token,
            # `host` replaces https://api.hubapi.com in every generated API client.
            "host": base_url.rstrip("/"),
            # urllib3 retries connection errors 3 times by default; the one retry policy
            # lives in connectors.retry, so the transport must not retry on its own.
            "retry": Retry(total=0, redirect=False, raise_on_redirect=False, raise_on_status=False),
        }
        if ca_bundle is not None:
            # Set on the SDK's Configuration; urllib3 then verifies against this bundle.
            options["ssl_ca_cert"] = ca_bundle
        sdk = HubSpot(**options)
        # Each discovery property builds a new ApiClient (and connection pool): keep one each.
        self._search_api = sdk.crm.objects.search_api
        self._basic_api = sdk.crm.objects.basic_api
        self._pipelines_api = sdk.crm.pipelines.pipelines_api
        pool_classes = guarded_pool_classes(policy)
        for api in (self._search_api, self._basic_api, self._pipelines_api):
            api.api_client.rest_client.pool_manager.pool_classes_by_scheme = pool_classes

    def search(self, object_type: str, body: Mapping[str, Any]) -> Response:
        """`POST /crm/v3/objects/{object_type}/search` with a CRM search request body."""
        return self._send(
            f"search of {object_type}",
            lambda: self._search_api.do_search(
                object_type,
                dict(body),
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
            search=True,
        )

    def list_page(
        self,
        object_type: str,
        *,
        limit: int,
        after: str | None,
        properties: list[str],
        archived: bool,
    ) -> Response:
        """`GET /crm/v3/objects/{object_type}` (one page of the list endpoint)."""
        kwargs: dict[str, Any] = {
            "limit": limit,
            "properties": properties,
            "archived": archived,
            "_preload_content": False,
            "_request_timeout": self._timeout,
        }
        if after is not None:
            kwargs["after"] = after
        return self._send(
            f"list of {object_type}", lambda: self._basic_api.get_page(object_type, **kwargs)
        )

    def deal_pipelines(self) -> Response:
        """`GET /crm/v3/pipelines/deals`: every deal pipeline with its stages."""
        return self._send(
            "deal pipelines",
            lambda: self._pipelines_api.get_all(
                "deals", _preload_content=False, _request_timeout=self._timeout
            ),
        )

    def close(self) -> None:
        """Close pooled connections."""
        for api in (self._search_api, self._basic_api, self._pipelines_api):
            api.api_client.rest_client.pool_manager.clear()

    # ------------------------------------------------------------------ internals

    def _send(self, what: str, request: Callable[[], Any], *, search: bool = False) -> Response:
        if not self._base_url_checked:
            # The stored URL may predate the policy: checked before the token leaves.
            self._policy.validate(self._base_url, field="base_url")
            self._base_url_checked = True
        governor = self._governor
        if governor is not None:
            governor.acquire(*((LANE_ALL, LANE_SEARCH) if search else (LANE_ALL,)))
        try:
            raw = request()
            try:
                content: bytes = raw.data
                headers = {k.lower(): v for k, v in raw.headers.items()}
            finally:
                raw.release_conn()
        except _API_EXCEPTIONS as exc:
            error = self._translate(what, exc.status, exc.headers, exc.body)
            if governor is not None and isinstance(error, RateLimitedError):
                # Every thread of the account holds back, not only the one that was told.
                pause = error.retry_after_seconds if error.retry_after_seconds is not None else 1.0
                governor.throttled(LANE_SEARCH if search else LANE_ALL, pause)
            raise error from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._network_error(what, exc) from None
        except OSError as exc:
            raise RetriableError(f"HubSpot {what} failed: {type(exc).__name__}") from None
        finally:
            if governor is not None:
                governor.release()
        if governor is not None:
            self._observe(governor, headers)
        try:
            body = json.loads(content)
        except ValueError:
            # Not quoted: a body that is not HubSpot's JSON is nobody's business outside.
            raise SourceDataError(f"HubSpot {what} returned a body that is not JSON") from None
        if not isinstance(body, dict):
            raise SourceDataError(f"HubSpot {what} returned JSON that is not an object")
        return Response(body, headers)

    def _observe(self, governor: Governor, headers: Mapping[str, str]) -> None:
        # https://developers.hubspot.com/docs/api/usage-details: responses carry the burst
        # policy's size, interval and what is left of it, and the daily quota left; the CRM
        # search endpoints send none of them.
        interval_ms = _int_or_none(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
        governor.observe(
            LANE_ALL,
            limit=_int_or_none(headers.get("x-hubspot-ratelimit-max")),
            interval_seconds=interval_ms / 1000 if interval_ms else None,
            remaining=_int_or_none(headers.get("x-hubspot-ratelimit-remaining")),
            daily_limit=_int_or_none(headers.get("x-hubspot-ratelimit-daily")),
            daily_remaining=_int_or_none(headers.get("x-hubspot-ratelimit-daily-remaining")),
        )

    def _network_error(self, what: str, exc: urllib3.exceptions.HTTPError) -> ConnectorError:
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        if isinstance(reason, urllib3.exceptions.SSLError):
            # A certificate that does not verify will not verify on retry either.
            return ConfigError(
                f"HubSpot {what}: TLS verification failed ({self._quote(str(reason))}); "
                "check base_url and the CA bundle"
            )
        if isinstance(reason, urllib3.exceptions.TimeoutError):
            return RetriableError(f"HubSpot {what} timed out after {self._timeout:g} s")
        return RetriableError(f"HubSpot {what} failed: {type(reason).__name__}")

    def _translate(
        self, what: str, status: int | None, raw_headers: Any, raw_body: Any
    ) -> ConnectorError:
        headers = {str(k).lower(): str(v) for k, v in dict(raw_headers or {}).items()}
        text = (
            raw_body.decode("utf-8", "replace")
            if isinstance(raw_body, bytes)
            else str(raw_body or "")
        )
        try:
            payload = json.loads(text) if text else {}
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        # Only HubSpot's own error shape is quoted (shortened); another body, such as an
        # HTML page or a proxy's answer, is not echoed.
        message = self._quote(str(payload.get("message") or "no message"))
        category = payload.get("category") or payload.get("errorType") or ""
        label = f"HubSpot {what}: HTTP {status}" + (f" {category}" if category else "")
        if status is None or status == 0:
            if "SSL" in text:
                return ConfigError(f"HubSpot {what}: TLS verification failed; check the CA bundle")
            return RetriableError(f"HubSpot {what} failed before a response: {message}")
        if status == 401:
            # Private-app tokens do not expire or refresh: a person must supply a new one.
            return AuthError(f"{label}: the private-app access token was rejected ({message})")
        if status == 403:
            return AuthError(f"{label}: the private app lacks a required scope ({message})")
        if status == 429:
            return self._rate_limited(label, message, payload, headers)
        if status >= 500 or status == 408:
            return RetriableError(f"{label}: {message}")
        # 400 (unknown property, bad filter), 404 (wrong base URL or object type) and the
        # like: the request is wrong for this account, which retrying does not change.
        return ConfigError(f"{label}: {message}")

    def _rate_limited(
        self, label: str, message: str, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> ConnectorError:
        # https://developers.hubspot.com/docs/api/usage-details: the 429 body's policyName
        # says which limit was hit; DAILY resets at midnight in the account's time zone.
        policy = str(payload.get("policyName") or "")
        if policy.upper() == "DAILY":
            limit = _int_or_none(headers.get("x-hubspot-ratelimit-daily"))
            remaining = _int_or_none(headers.get("x-hubspot-ratelimit-daily-remaining"))
            used = limit - remaining if limit is not None and remaining is not None else limit
            return QuotaExceededError(
                f"{label}: the account's daily API limit is spent ({message})",
                used=used,
                limit=limit,
            )
        delay = retry_after_seconds(headers.get("retry-after"), headers.get("date"))
        if delay is None:
            # No Retry-After: wait one whole rolling window of the policy that was hit.
            interval_ms = _int_or_none(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
            if interval_ms is not None:
                delay = interval_ms / 1000
        return RateLimitedError(
            f"{label} {policy or 'rate limit'}: {message}", retry_after_seconds=delay
        )

    def _quote(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "[redacted]")
        return quote_vendor(text)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
