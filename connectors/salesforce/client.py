"""The only module that talks HTTP to Salesforce, and the only one importing simple-salesforce.

Every public method of `SalesforceClient` makes exactly one HTTP request and raises only
`connectors.errors` exceptions. The connector wraps each call in the run's `RetryPolicy`, so
nothing here retries. simple-salesforce's own re-login loop stays inert because we build
`Salesforce` from a session id: `_call_salesforce` only re-logs in when it holds a login
partial (simple_salesforce/api.py, `_call_salesforce`), and ours never does.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError
from simple_salesforce.format import format_soql
from simple_salesforce.util import call_salesforce

from connectors.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    QuotaExceededError,
    RateLimitedError,
    RetriableError,
    SessionExpiredError,
    SourceDataError,
)
from connectors.hosts import HostNotAllowedError, HostPolicy, guarded_pool_classes, quote_vendor

T = TypeVar("T")

#: `Sforce-Limit-Info: api-usage=18/5000` (REST API Developer Guide, "Limit Info Header":
#: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm).
_API_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
#: Bulk API 2.0 job ids are record ids (15 or 18 alphanumerics); anything else in a URL
#: path we build is refused rather than followed.
_JOB_ID = re.compile(r"^[A-Za-z0-9]{15,18}$")
#: sObject API names (the object name goes into a URL path).
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_REDACTED = "[redacted]"
#: Secrets shorter than this are not searched for in messages: redacting "a" would shred
#: every message, and such a value cannot be a real Salesforce secret anyway.
_MIN_REDACT_LEN = 4


class AuthFlow(enum.StrEnum):
    """How the connector obtains an access token from `{login_url}/services/oauth2/token`."""

    #: OAuth 2.0 username-password flow: client id/secret + username + password&token.
    password = "password"
    #: OAuth 2.0 client-credentials flow: client id/secret of an app with a run-as user.
    client_credentials = "client_credentials"


@dataclass(frozen=True, repr=False)
class Credentials:
    """Plain-text credentials for one login. `repr` is suppressed so they never get logged."""

    flow: AuthFlow
    client_id: str
    client_secret: str
    username: str = ""
    password: str = ""
    security_token: str = ""

    def __repr__(self) -> str:
        return f"Credentials(flow={self.flow.value!r}, ...)"

    def secret_values(self) -> list[str]:
        """Every value that must never appear in an error message."""
        values = [self.client_id, self.client_secret, self.password, self.security_token]
        values.append(self.password + self.security_token)
        return [v for v in values if len(v) >= _MIN_REDACT_LEN]


@dataclass(frozen=True, slots=True)
class QueryBatch:
    """One REST query batch: `records` still carry their `attributes`."""

    records: list[dict[str, Any]]
    done: bool
    next_records_url: str | None
    total_size: int


@dataclass(frozen=True, slots=True)
class BulkJobStatus:
    """State of a Bulk API 2.0 query job (`UploadComplete`, `InProgress`, `JobComplete`,
    `Failed`, `Aborted`)."""

    state: str
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class BulkResults:
    """One set of Bulk API 2.0 query results: CSV rows (strings) and the next locator."""

    header: list[str]
    rows: list[list[str]]
    #: None once Salesforce answers `Sforce-Locator: null` (no more results).
    locator: str | None


class QueryLocatorExpiredError(SourceDataError):
    """`INVALID_QUERY_LOCATOR`: a queryMore cursor expired or was released.

    Since API 56.0 a cursor lives two days; before, it expired after 15 idle minutes and a
    user could hold 10 (Salesforce App Limits, "API Query Cursor Limits"). Retrying the dead
    cursor cannot help, so the connector restarts the query from its keyset position.
    """


class QueryTimeoutError(ConnectorError):
    """`QUERY_TIMEOUT` (HTTP 400): the query ran longer than Salesforce allows.

    Retrying the same query cannot help; the connector narrows the `SystemModstamp` window
    (halves, down to a minimum) and raises this error, with that explanation, only when
    even the narrowest window times out.
    """

    error_class = "source_timeout"


@dataclass(frozen=True, slots=True)
class DeletedRecord:
    """One entry of the delete log (`sObject Get Deleted`)."""

    record_id: str
    deleted_at: datetime


@dataclass(frozen=True, slots=True)
class DeletedRecords:
    """The answer of `GET /sobjects/{type}/deleted/?start=&end=`."""

    records: list[DeletedRecord]
    #: Oldest moment the delete log still covers; None when Salesforce does not say.
    earliest_date_available: datetime | None
    #: Last moment the answer is complete up to; None when Salesforce does not say.
    latest_date_covered: datetime | None


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout (simple-salesforce never passes one), pins the CA
    bundle, connects only to hosts the connector's `HostPolicy` allows, and remembers the
    last `Sforce-Limit-Info` header (its exceptions drop headers).

    The CA bundle is applied here rather than only on `Session.verify` because requests lets
    the `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` environment variables override a session's
    `verify` (requests `Session.merge_environment_settings`).
    """

    def __init__(self, timeout_seconds: float, ca_bundle: str | None, policy: HostPolicy) -> None:
        # Set before HTTPAdapter.__init__, which builds the pool manager.
        self.policy = policy
        super().__init__()
        self.timeout_seconds = timeout_seconds
        self.ca_bundle = ca_bundle
        self.last_limit_info: str | None = None

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # Every connection, redirects included, goes through the host policy.
        self.poolmanager.pool_classes_by_scheme = guarded_pool_classes(self.policy)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Any = None,
    ) -> requests.Response:
        response = super().send(
            request,
            stream=stream,
            timeout=self.timeout_seconds if timeout is None else timeout,
            verify=self.ca_bundle or verify,
            cert=cert,
            proxies=proxies,
        )
        limit_info = response.headers.get("Sforce-Limit-Info")
        if limit_info:
            self.last_limit_info = limit_info
        return response


def format_query(template: str, **values: Any) -> str:
    """Fill a SOQL template; every `{name}` value is quoted and escaped by simple-salesforce's
    `format_soql` (dates, datetimes, strings, lists), `{name:literal}` is inserted as is and
    must only ever receive validated identifiers."""
    return format_soql(template, **values)


def parse_api_usage(limit_info: str | None) -> tuple[int, int] | None:
    """`(used, limit)` from a `Sforce-Limit-Info` header value, or None."""
    if not limit_info:
        return None
    match = _API_USAGE.search(limit_info)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


class SalesforceClient:
    """A logged-in (or not yet) Salesforce REST session with error translation.

    `login_url` is the origin whose `/services/oauth2/token` issues tokens: production
    `https://login.salesforce.com`, sandbox `https://test.salesforce.com`, or the org's My
    Domain. simple-salesforce's login helpers always build `https://{domain}.salesforce.com`
    (simple_salesforce/login.py), so the token is fetched here through the same session and
    handed to `Salesforce(instance_url=..., session_id=...)`.

    `policy` decides which hosts it may reach: `login_url` is checked before the token
    request, the `instance_url` the login answers before it is used, and every connection
    when it is opened (see `connectors.hosts`).
    """

    def __init__(
        self,
        *,
        login_url: str,
        api_version: str,
        credentials: Credentials,
        timeout_seconds: float,
        ca_bundle: str | None,
        policy: HostPolicy,
    ) -> None:
        self._login_url = login_url.rstrip("/")
        self._policy = policy
        self._api_version = api_version
        self._credentials = credentials
        self._timeout_seconds = timeout_seconds
        self._adapter = _TimeoutAdapter(timeout_seconds, ca_bundle or None, policy)
        self._session = requests.Session()
        self._session.mount("https://", self._adapter)
        self._session.mount("http://", self._adapter)
        # System trust store unless the company's inspecting proxy needs its own CA.
        self._session.verify = ca_bundle if ca_bundle else True
        self._sf: Salesforce | None = None
        self._access_token: str | None = None
        self.instance_url: str | None = None

    # ----------------------------------------------------------------------------- session

    @property
    def logged_in(self) -> bool:
        """True once a token has been obtained (it may still have expired since)."""
        return self._sf is not None

    def api_usage(self) -> tuple[int, int] | None:
        """`(used, limit)` of the org's daily API requests, from the last response seen."""
        return parse_api_usage(self._adapter.last_limit_info)

    def session_state(self) -> dict[str, str | None]:
        """The session a read in another process ended with: its token, instance and last
        `Sforce-Limit-Info` (for `adopt_session_state`; it never leaves the machine)."""
        return {
            "access_token": self._access_token,
            "instance_url": self.instance_url,
            "limit_info": self._adapter.last_limit_info,
        }

    def adopt_session_state(self, state: dict[str, str | None]) -> None:
        """Continue with the session another process logged in with (`session_state`), so
        the next call needs no second login, and report its last quota header."""
        if state.get("limit_info") is not None:
            self._adapter.last_limit_info = state["limit_info"]
        token, instance_url = state.get("access_token"), state.get("instance_url")
        if token and instance_url and token != self._access_token:
            # Checked in the reader process already; checked again where it is used.
            self._policy.validate(instance_url)
            self._bind(token, instance_url)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def login(self) -> None:
        """Fetch an access token (one POST) and bind simple-salesforce to the instance."""
        creds = self._credentials
        form: dict[str, str] = {
            "grant_type": creds.flow.value,
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
        }
        if creds.flow is AuthFlow.password:
            form["username"] = creds.username
            # The security token is appended to the password (OAuth 2.0 Username-Password
            # Flow, https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_username_password_flow.htm).
            form["password"] = creds.password + creds.security_token
        token_url = f"{self._login_url}/services/oauth2/token"
        # The credentials go in this request's body: the stored URL is checked again here
        # (it may predate the policy), before any connection is made.
        self._policy.validate(self._login_url, field="login_url")
        # Only plain data leaves the request: a Response kept in a frame of a raised error
        # would pin its connection pool (and open socket) for as long as the error lives.
        # A redirect would re-post the credentials elsewhere: it is refused, not followed.
        status, content = self._send(
            lambda: _status_and_content(
                self._session.post(
                    token_url,
                    data=form,
                    headers={"Accept": "application/json"},
                    allow_redirects=False,
                )
            ),
            "login",
        )
        body = self._token_body(status, content)
        access_token = body.get("access_token")
        instance_url = body.get("instance_url")
        if not isinstance(access_token, str) or not access_token:
            raise SourceDataError("Salesforce token response has no access_token")
        if not isinstance(instance_url, str) or urlsplit(instance_url).scheme not in (
            "https",
            "http",
        ):
            raise SourceDataError("Salesforce token response has no usable instance_url")
        try:
            # Every API call carries the access token to the instance: it must be a
            # Salesforce host (or allowlisted) like login_url.
            self._policy.validate(instance_url)
        except HostNotAllowedError as exc:
            raise HostNotAllowedError(
                f"Salesforce login at {self._login_url} answered an instance_url that is not "
                f"allowed, not used: {exc.message}"
            ) from None
        self._bind(access_token, instance_url)

    def _bind(self, access_token: str, instance_url: str) -> None:
        self._access_token = access_token
        self.instance_url = instance_url.rstrip("/")
        self._sf = Salesforce(
            instance_url=self.instance_url,
            session_id=access_token,
            session=self._session,
            version=self._api_version,
            # Plain dicts: the default OrderedDict hook makes JSON parsing several times slower.
            object_pairs_hook=None,
        )

    def _token_body(self, status: int, content: bytes) -> dict[str, Any]:
        if 300 <= status < 400:
            raise ConfigError(
                f"Salesforce login at {self._login_url} answered a redirect (HTTP {status}), "
                "which is not followed: set login_url to the org's login URL"
            )
        if status >= 500:
            raise RetriableError(f"Salesforce login at {self._login_url} failed with HTTP {status}")
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise SourceDataError(
                f"Salesforce login at {self._login_url} answered HTTP {status} "
                "without a JSON object"
            )
        if status != 200:
            # Token errors are `{"error", "error_description"}`, e.g. invalid_grant for a wrong
            # password/token, invalid_client(_id) for a wrong client id or secret.
            code = quote_vendor(str(body.get("error") or f"HTTP {status}"), 60)
            description = quote_vendor(str(body.get("error_description") or ""))
            raise AuthError(
                self._redact(
                    f"Salesforce login at {self._login_url} failed ({self._credentials.flow.value}"
                    f" flow): {code}: {description}".rstrip(": ")
                )
            )
        return body

    # ----------------------------------------------------------------------------- REST

    def query(self, soql: str, *, include_deleted: bool, batch_size: int) -> QueryBatch:
        """First batch of a SOQL query (`/queryAll` when `include_deleted`)."""
        sf = self._require_session()
        body = self._send(
            lambda: sf.query(
                soql, include_deleted=include_deleted, headers=self._batch_header(batch_size)
            ),
            "query",
        )
        return self._query_batch(body)

    def query_more(self, next_records_url: str, *, batch_size: int) -> QueryBatch:
        """The batch at `nextRecordsUrl` (a path on the instance)."""
        if not next_records_url.startswith("/services/data/"):
            raise SourceDataError("Salesforce returned an unexpected nextRecordsUrl")
        sf = self._require_session()
        body = self._send(
            lambda: sf.query_more(
                next_records_url, identifier_is_url=True, headers=self._batch_header(batch_size)
            ),
            "queryMore",
        )
        return self._query_batch(body)

    def count(self, soql: str) -> int:
        """Result of a `SELECT COUNT() ...` query over `/queryAll` (`totalSize`)."""
        sf = self._require_session()
        body = self._send(lambda: sf.query(soql, include_deleted=True), "count query")
        total = body.get("totalSize") if isinstance(body, dict) else None
        if not isinstance(total, int) or isinstance(total, bool):
            raise SourceDataError("Salesforce COUNT() answer has no integer totalSize")
        return total

    def limits(self) -> dict[str, Any]:
        """`GET /limits`: the org's allocations (`DailyApiRequests` and friends)."""
        sf = self._require_session()
        body = self._send(sf.limits, "limits")
        if not isinstance(body, dict):
            raise SourceDataError("Salesforce /limits answer is not a JSON object")
        return dict(body)

    def get_deleted(self, sobject: str, start: datetime, end: datetime) -> DeletedRecords:
        """`GET /sobjects/{sobject}/deleted/?start=&end=`: ids deleted in `[start, end]`.

        simple-salesforce's `SFType.deleted` builds the URL (times as ISO 8601 with offset);
        Salesforce ignores the seconds of both bounds.
        """
        sf = self._require_session()
        if not _API_NAME.match(sobject):
            raise ConfigError(f"invalid Salesforce object name {sobject!r}")
        sftype = getattr(sf, sobject)
        body = self._send(lambda: sftype.deleted(start, end), "getDeleted")
        if not isinstance(body, dict) or not isinstance(body.get("deletedRecords"), list):
            raise SourceDataError("Salesforce getDeleted answer has no list of deletedRecords")
        records = []
        for entry in body["deletedRecords"]:
            record_id = entry.get("id") if isinstance(entry, dict) else None
            deleted = entry.get("deletedDate") if isinstance(entry, dict) else None
            if not isinstance(record_id, str) or not record_id:
                raise SourceDataError("Salesforce getDeleted entry has no id")
            records.append(DeletedRecord(record_id, _sf_time(deleted, "deletedDate")))
        earliest = body.get("earliestDateAvailable")
        latest = body.get("latestDateCovered")
        return DeletedRecords(
            records,
            _sf_time(earliest, "earliestDateAvailable") if earliest else None,
            _sf_time(latest, "latestDateCovered") if latest else None,
        )

    # ----------------------------------------------------------------------------- Bulk 2.0

    def bulk_create_query_job(self, soql: str, *, include_deleted: bool) -> str:
        """Create a Bulk API 2.0 query job (`POST /jobs/query`); return its id.

        `queryAll` is the operation that includes soft-deleted rows (Bulk API 2.0 Developer
        Guide, "Create a Query Job").
        """
        sf = self._require_session()
        payload = {
            "operation": "queryAll" if include_deleted else "query",
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        body = self._send(
            lambda: sf.restful("jobs/query", method="POST", json=payload), "bulk job creation"
        )
        job_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise SourceDataError("Salesforce Bulk API answer has no valid job id")
        return job_id

    def bulk_job_status(self, job_id: str) -> BulkJobStatus:
        """`GET /jobs/query/{id}`: the job's state and error message."""
        sf = self._require_session()
        self._check_job_id(job_id)
        body = self._send(lambda: sf.restful(f"jobs/query/{job_id}"), "bulk job status")
        if not isinstance(body, dict) or not isinstance(body.get("state"), str):
            raise SourceDataError("Salesforce Bulk API job status has no state")
        state: str = body["state"]
        error = body.get("errorMessage")
        return BulkJobStatus(state, quote_vendor(str(error)) if error else None)

    def bulk_results(self, job_id: str, *, locator: str | None, max_records: int) -> BulkResults:
        """One set of a completed job's CSV results (`GET /jobs/query/{id}/results`)."""
        sf = self._require_session()
        self._check_job_id(job_id)
        params: dict[str, str | int] = {"maxRecords": max_records}
        if locator:
            params["locator"] = locator
        headers = {"Authorization": f"Bearer {self._access_token}", "Accept": "text/csv"}
        url = f"{sf.base_url}jobs/query/{job_id}/results"
        next_locator, content = self._send(
            lambda: _locator_and_content(
                call_salesforce(url, "GET", self._session, headers, params=params)
            ),
            "bulk results",
        )
        try:
            text = content.decode("utf-8")
            reader = csv.reader(io.StringIO(text, newline=""))
            header = next(reader, None)
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceDataError(f"Salesforce Bulk API results are not valid CSV: {exc}") from None
        if header is None:
            raise SourceDataError("Salesforce Bulk API results have no header row")
        if any(len(row) != len(header) for row in rows):
            raise SourceDataError("Salesforce Bulk API results have rows of the wrong width")
        # The last set carries the literal string "null" (Bulk API 2.0, "Get Results for a
        # Query Job"); a missing header would loop forever, so it also ends the results.
        done = next_locator is None or next_locator in ("", "null")
        return BulkResults(header, rows, None if done else next_locator)

    # ----------------------------------------------------------------------------- internals

    def _require_session(self) -> Salesforce:
        if self._sf is None:
            raise SessionExpiredError("not logged in to Salesforce yet")
        return self._sf

    @staticmethod
    def _check_job_id(job_id: str) -> None:
        if not _JOB_ID.match(job_id):
            raise SourceDataError("invalid Salesforce Bulk API job id")

    @staticmethod
    def _batch_header(batch_size: int) -> dict[str, str]:
        # REST API "Query Options Header": batchSize 200..2000, a hint Salesforce may lower.
        return {"Sforce-Query-Options": f"batchSize={batch_size}"}

    @staticmethod
    def _query_batch(body: Any) -> QueryBatch:
        if not isinstance(body, dict):
            raise SourceDataError("Salesforce query answer is not a JSON object")
        records = body.get("records")
        done = body.get("done")
        next_url = body.get("nextRecordsUrl")
        total = body.get("totalSize", 0)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SourceDataError("Salesforce query answer has no list of records")
        if not isinstance(done, bool):
            raise SourceDataError("Salesforce query answer has no boolean 'done'")
        if not done and not isinstance(next_url, str):
            raise SourceDataError("Salesforce query answer is not done but has no nextRecordsUrl")
        if not isinstance(total, int):
            raise SourceDataError("Salesforce query answer has a non-integer totalSize")
        return QueryBatch(records, done, next_url if not done else None, total)

    def _redact(self, text: str) -> str:
        secrets = self._credentials.secret_values()
        if self._access_token and len(self._access_token) >= _MIN_REDACT_LEN:
            secrets.append(self._access_token)
        # Longest first, so "password+token" is replaced before its "password" prefix.
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, _REDACTED)
        return text

    def _send(self, call: Callable[[], T], what: str) -> T:
        """Run one request, translating every failure into a `connectors.errors` error."""
        error: Exception
        try:
            return call()
        except SalesforceError as exc:
            error = self._translate(exc, what)
        except requests.exceptions.SSLError as exc:
            # Not transient: a company TLS proxy re-signing traffic needs its CA configured.
            error = ConfigError(
                self._redact(
                    f"TLS verification failed talking to Salesforce ({what}): {exc}. If an "
                    "inspecting proxy re-signs HTTPS traffic, configure its CA bundle."
                )
            )
        except requests.exceptions.Timeout:
            error = RetriableError(f"Salesforce {what} timed out after {self._timeout_seconds:g} s")
        except requests.exceptions.JSONDecodeError:
            error = SourceDataError(f"Salesforce {what} answer is not valid JSON")
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            error = ConfigError(self._redact(f"invalid Salesforce URL ({what}): {exc}"))
        except requests.exceptions.RequestException as exc:
            # Refused/reset connections, DNS hiccups, truncated bodies: transient. Only the
            # exception's type is quoted: its text tells refused from unreachable ports.
            error = RetriableError(f"Salesforce {what} failed in transport: {type(exc).__name__}")
        # Raised outside the handlers so the error has no __context__: the vendor exception's
        # traceback holds the HTTP response, whose socket would otherwise live as long as
        # the error does (and its text is not ours to vouch for).
        raise error

    def _translate(self, exc: SalesforceError, what: str) -> Exception:
        """Map an HTTP error answer to the error group the retry policy acts on.

        Codes from the REST API "Status Codes and Error Responses" page
        (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
        """
        status = int(exc.status)
        code, message = _first_error(exc.content)
        detail = self._redact(f"{code}: {message}" if message else code)
        where = f"Salesforce {what} failed with HTTP {status}"
        if status == 401:
            return SessionExpiredError(f"{where}: {detail}")
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            if "concurrent" in message.lower():
                # "ConcurrentPerOrgLongTxn Limit exceeded": too many long-running requests
                # at once; it clears when they finish, so back off and retry.
                return RateLimitedError(f"{where}: {detail}")
            usage = self.api_usage()
            used, limit = usage if usage else (None, None)
            return QuotaExceededError(
                f"{where}: the org's daily API request limit is spent"
                + (f" ({used}/{limit})" if usage else "")
                + f": {detail}",
                used=used,
                limit=limit,
            )
        if status == 403:
            return AuthError(f"{where}: {detail}")
        if status == 400 and code == "INVALID_QUERY_LOCATOR":
            return QueryLocatorExpiredError(f"{where}: {detail}")
        if status == 400 and code == "QUERY_TIMEOUT":
            return QueryTimeoutError(f"{where}: {detail}")
        if status in (400, 404):
            return ConfigError(f"{where}: {detail}")
        if status == 429:
            return RateLimitedError(f"{where}: {detail}")
        if status >= 500:
            return RetriableError(f"{where}: {detail}")
        return SourceDataError(f"{where}: {detail}")


def _sf_time(value: Any, name: str) -> datetime:
    """A Salesforce REST datetime (`2026-11-26T18:45:43.000+0000`) as an aware UTC datetime."""
    if not isinstance(value, str):
        raise SourceDataError(f"Salesforce getDeleted answer: {name} is not a datetime")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SourceDataError(f"Salesforce getDeleted answer: {name} is not a datetime") from None
    if moment.tzinfo is None:
        raise SourceDataError(f"Salesforce getDeleted answer: {name} has no offset")
    return moment.astimezone(UTC)


def _status_and_content(response: requests.Response) -> tuple[int, bytes]:
    with response:
        return response.status_code, response.content


def _locator_and_content(response: requests.Response) -> tuple[str | None, bytes]:
    with response:
        return response.headers.get("Sforce-Locator"), response.content


def _first_error(content: Any) -> tuple[str, str]:
    """`(errorCode, message)` of the first entry of a `[{"message", "errorCode"}]` body."""
    entry: Any = content
    if isinstance(content, list) and content:
        entry = content[0]
    if isinstance(entry, dict):
        code = entry.get("errorCode") or entry.get("error") or "UNKNOWN_ERROR"
        message = entry.get("message") or entry.get("error_description") or ""
        return quote_vendor(str(code), 60), quote_vendor(str(message))
    # Not Salesforce's error shape (an HTML page, a proxy's or another service's answer):
    # nothing of it is quoted.
    return "UNPARSEABLE_ERROR_BODY", ""
