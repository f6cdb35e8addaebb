"""A fake Salesforce org: OAuth token endpoint, REST query/queryAll/queryMore, /limits and
Bulk API 2.0 query jobs, answering from an in-memory store of leads and opportunities.

It parses the SOQL it receives (SELECT fields or COUNT(), FROM, WHERE with AND/OR/NOT,
comparisons, IN, LIKE, ORDER BY, LIMIT) so connector bugs in generated queries show up as the
same 400 errors Salesforce would give. Faults are injected per endpoint: HTTP errors with
Salesforce's `[{"message", "errorCode"}]` body, slow answers, malformed bodies, expired
sessions, expired query cursors and an exhausted daily API quota.

Late commits: `insert`/`update` with `committed=False` stand for a long transaction.
SystemModstamp is set when the change is made, but the change becomes visible only at
`commit_pending()`, possibly after a sync already read past that stamp (the reason syncs
re-read an overlap behind their watermark).

Speed matters (a 200,000-lead benchmark): the store keeps `(SystemModstamp, Id)` keys sorted
so a window is found by bisection, and each record's JSON is serialised once per field list.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import csv
import io
import itertools
import json
import random
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response

# ----------------------------------------------------------------------------- schema

STRING, ID, BOOLEAN, DATETIME, DATE, NUMBER = (
    "string",
    "id",
    "boolean",
    "datetime",
    "date",
    "number",
)

_COMMON: dict[str, str] = {
    "Id": ID,
    "IsDeleted": BOOLEAN,
    "CreatedDate": DATETIME,
    "LastModifiedDate": DATETIME,
    "SystemModstamp": DATETIME,
    "OwnerId": ID,
    "LeadSource": STRING,
}
SCHEMAS: dict[str, dict[str, str]] = {
    "Lead": {
        **_COMMON,
        "FirstName": STRING,
        "LastName": STRING,
        "Company": STRING,
        "Email": STRING,
        "Status": STRING,
        "Country": STRING,
        "Industry": STRING,
        "IsConverted": BOOLEAN,
        "ConvertedDate": DATE,
        "ConvertedOpportunityId": ID,
    },
    "Opportunity": {
        **_COMMON,
        "Name": STRING,
        "AccountId": ID,
        "StageName": STRING,
        "IsClosed": BOOLEAN,
        "IsWon": BOOLEAN,
        "CloseDate": DATE,
        "Amount": NUMBER,
        "Probability": NUMBER,
        "Type": STRING,
        "ForecastCategoryName": STRING,
    },
}
#: Key prefixes of the standard objects' record ids.
PREFIXES = {"Lead": "00Q", "Opportunity": "006"}

LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
#: Default sales process stages with (probability, closed, won, forecast category).
STAGES: dict[str, tuple[int, bool, bool, str]] = {
    "Prospecting": (10, False, False, "Pipeline"),
    "Qualification": (10, False, False, "Pipeline"),
    "Needs Analysis": (20, False, False, "Pipeline"),
    "Value Proposition": (50, False, False, "Pipeline"),
    "Proposal/Price Quote": (75, False, False, "Pipeline"),
    "Negotiation/Review": (90, False, False, "Pipeline"),
    "Closed Won": (100, True, True, "Closed"),
    "Closed Lost": (0, True, False, "Omitted"),
}
OPPORTUNITY_TYPES = (
    "New Customer",
    "Existing Customer - Upgrade",
    "Existing Customer - Replacement",
    "Existing Customer - Downgrade",
)

_ENCODER = json.JSONEncoder(separators=(",", ":"))
SUPPORTED_API_VERSIONS = frozenset(f"{v}.0" for v in range(20, 63))
START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)


def sf_datetime(moment: datetime) -> str:
    """Salesforce's REST rendering: `2026-11-26T18:45:43.000+0000`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps([{"message": message, "errorCode": code}]).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class SoqlError(Exception):
    """A query Salesforce would refuse: `code` is MALFORMED_QUERY, INVALID_FIELD, ..."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------- SOQL

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)
_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    "_": "\\_",
    "%": "\\%",
}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    value: Any = None


def _tokenise(soql: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(soql):
        if soql[pos:].strip() == "":
            break
        match = _TOKEN.match(soql, pos)
        if match is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {soql[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        text = match.group(kind)
        value: Any = text
        if kind == "string":
            value = re.sub(r"\\(.)", lambda m: _unescape(m.group(1)), text[1:-1])
        elif kind == "datetime":
            value = datetime.fromisoformat(text).astimezone(UTC)
        elif kind == "date":
            value = date.fromisoformat(text)
        elif kind == "number":
            value = Decimal(text)
        tokens.append(_Tok(kind, text, value))
        pos = match.end()
    return tokens


def _unescape(char: str) -> str:
    if char not in _ESCAPES:
        raise SoqlError("MALFORMED_QUERY", f"invalid escape sequence \\{char}")
    return _ESCAPES[char]


Predicate = Callable[[dict[str, Any]], bool]


@dataclass
class Comparison:
    """`field op literal` (or IN / NOT IN / LIKE)."""

    field: str
    op: str
    value: Any


@dataclass
class BoolOp:
    """AND / OR of sub-conditions, or NOT of one."""

    op: str
    parts: list[Any]


@dataclass
class ParsedQuery:
    """What the fake needs from a SOQL statement."""

    sobject: str
    fields: list[str]  # canonical names; empty for COUNT()
    count: bool
    where: Any  # Comparison | BoolOp | None
    order_by: list[tuple[str, bool]]  # (field, descending)
    limit: int | None


class _Parser:
    def __init__(self, soql: str) -> None:
        self.tokens = _tokenise(soql)
        self.pos = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def peek_text(self) -> str:
        tok = self.peek()
        return tok.text if tok is not None else ""

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        self.pos += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text.upper() == word:
            self.pos += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            tok = self.peek()
            raise SoqlError(
                "MALFORMED_QUERY",
                f"expecting {word}, unexpected token: {tok.text if tok else ''!r}",
            )

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text:
            raise SoqlError(
                "MALFORMED_QUERY", f"expecting '{text}', unexpected token: {tok.text!r}"
            )

    def parse(self) -> ParsedQuery:
        self.expect_keyword("SELECT")
        fields: list[str] = []
        count = False
        if self.peek_text().upper() == "COUNT":
            self.next()
            self.expect("(")
            self.expect(")")
            count = True
        else:
            while True:
                tok = self.next()
                if tok.kind != "ident":
                    raise SoqlError("MALFORMED_QUERY", f"unexpected token: {tok.text!r}")
                fields.append(tok.text)
                if self.peek_text() == ",":
                    self.next()
                    continue
                break
        self.expect_keyword("FROM")
        sobject = self.next()
        if sobject.kind != "ident":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {sobject.text!r}")
        where = None
        if self.keyword("WHERE"):
            where = self.expression()
        order_by: list[tuple[str, bool]] = []
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            while True:
                tok = self.next()
                if tok.kind != "ident":
                    raise SoqlError("MALFORMED_QUERY", f"unexpected token: {tok.text!r}")
                descending = self.keyword("DESC")
                if not descending:
                    self.keyword("ASC")
                order_by.append((tok.text, descending))
                if self.peek_text() == ",":
                    self.next()
                    continue
                break
        limit = None
        if self.keyword("LIMIT"):
            tok = self.next()
            if tok.kind != "number":
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: {tok.text!r}")
            limit = int(tok.value)
        if self.peek() is not None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {self.peek_text()!r}")
        return ParsedQuery(sobject.text, fields, count, where, order_by, limit)

    def expression(self) -> Any:
        first = self.unary()
        op: str | None = None
        parts = [first]
        while True:
            tok = self.peek()
            if tok is None or tok.kind != "ident" or tok.text.upper() not in ("AND", "OR"):
                break
            word = tok.text.upper()
            if op is not None and word != op:
                # SOQL refuses `a AND b OR c`: mixing needs parentheses.
                raise SoqlError(
                    "MALFORMED_QUERY", "unexpected token: '" + tok.text + "' (use parentheses)"
                )
            op = word
            self.next()
            parts.append(self.unary())
        return first if op is None else BoolOp(op, parts)

    def unary(self) -> Any:
        if self.keyword("NOT"):
            return BoolOp("NOT", [self.unary()])
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.next()
            inner = self.expression()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        name = self.next()
        if name.kind != "ident":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {name.text!r}")
        if self.keyword("NOT"):
            self.expect_keyword("IN")
            return Comparison(name.text, "NOT IN", self.value_list())
        if self.keyword("IN"):
            return Comparison(name.text, "IN", self.value_list())
        if self.keyword("LIKE"):
            tok = self.next()
            if tok.kind != "string":
                raise SoqlError("MALFORMED_QUERY", "LIKE needs a string")
            return Comparison(name.text, "LIKE", tok.value)
        op = self.next()
        if op.kind != "op":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {op.text!r}")
        return Comparison(name.text, "!=" if op.text == "<>" else op.text, self.literal())

    def value_list(self) -> list[Any]:
        self.expect("(")
        values = [self.literal()]
        while self.peek_text() == ",":
            self.next()
            values.append(self.literal())
        self.expect(")")
        return values

    def literal(self) -> Any:
        tok = self.next()
        if tok.kind in ("string", "datetime", "date", "number"):
            return tok.value
        if tok.kind == "ident" and tok.text.lower() in ("true", "false"):
            return tok.text.lower() == "true"
        if tok.kind == "ident" and tok.text.lower() == "null":
            return None
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: {tok.text!r}")


def parse_soql(soql: str, schemas: dict[str, dict[str, str]]) -> ParsedQuery:
    """Parse and check `soql` against `schemas` (fields resolved to canonical names)."""
    query = _Parser(soql).parse()
    schema_name = next((n for n in schemas if n.lower() == query.sobject.lower()), None)
    if schema_name is None:
        raise SoqlError("INVALID_TYPE", f"sObject type '{query.sobject}' is not supported.")
    schema = schemas[schema_name]
    lower = {name.lower(): name for name in schema}

    def resolve(name: str) -> str:
        canonical = lower.get(name.lower())
        if canonical is None:
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{schema_name}'.")
        return canonical

    query.sobject = schema_name
    query.fields = [resolve(f) for f in query.fields]
    if len(set(query.fields)) != len(query.fields):
        raise SoqlError("MALFORMED_QUERY", "duplicate field selected")
    query.order_by = [(resolve(f), d) for f, d in query.order_by]

    def check(node: Any) -> None:
        if isinstance(node, BoolOp):
            for part in node.parts:
                check(part)
            return
        node.field = resolve(node.field)
        ftype = schema[node.field]
        values = node.value if isinstance(node.value, list) else [node.value]
        for value in values:
            if value is None:
                continue
            ok = {
                DATETIME: isinstance(value, datetime),
                DATE: isinstance(value, date) and not isinstance(value, datetime),
                BOOLEAN: isinstance(value, bool),
                NUMBER: isinstance(value, Decimal),
                STRING: isinstance(value, str),
                ID: isinstance(value, str),
            }[ftype]
            if not ok:
                raise SoqlError(
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{node.field}' must be of type "
                    f"{ftype} and should not be enclosed in quotes"
                    if ftype in (DATETIME, DATE, BOOLEAN, NUMBER)
                    else f"value of filter criterion for field '{node.field}' must be a string",
                )

    if query.where is not None:
        check(query.where)
    return query


def _comparable(value: Any, ftype: str) -> Any:
    """A stored JSON value turned into something that compares like Salesforce does."""
    if value is None:
        return None
    if ftype == DATETIME:
        return datetime.fromisoformat(value)
    if ftype == DATE:
        return date.fromisoformat(value)
    if ftype == NUMBER:
        return Decimal(str(value))
    if ftype == STRING:
        return str(value).casefold()  # text comparisons are case-insensitive
    return value


def compile_where(node: Any, schema: dict[str, str]) -> Predicate:
    """A predicate over a record's comparable values (`_Row.cmp`)."""
    if node is None:
        return lambda _values: True
    if isinstance(node, BoolOp):
        parts = [compile_where(p, schema) for p in node.parts]
        if node.op == "AND":
            return lambda values: all(p(values) for p in parts)
        if node.op == "OR":
            return lambda values: any(p(values) for p in parts)
        return lambda values: not parts[0](values)
    ftype = schema[node.field]
    name = node.field

    def lit(value: Any) -> Any:
        if isinstance(value, str) and ftype == STRING:
            return value.casefold()
        return value

    if node.op in ("IN", "NOT IN"):
        options = {lit(v) for v in node.value}
        negate = node.op == "NOT IN"
        return lambda values: (values[name] in options) != negate
    if node.op == "LIKE":
        pattern = re.compile(
            "".join(
                ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
                for ch in re.sub(r"\\([%_])", r"\1", node.value.casefold())
            ),
            re.DOTALL,
        )
        return lambda values: (
            values[name] is not None and bool(pattern.fullmatch(str(values[name]).casefold()))
        )
    target = lit(node.value)
    op = node.op
    if target is None:
        if op == "=":
            return lambda values: values[name] is None
        if op == "!=":
            return lambda values: values[name] is not None
        return lambda _values: False

    def compare(values: dict[str, Any]) -> bool:
        current = values[name]
        if current is None:
            return op == "!="
        if op == "=":
            return bool(current == target)
        if op == "!=":
            return bool(current != target)
        if op == "<":
            return bool(current < target)
        if op == "<=":
            return bool(current <= target)
        if op == ">":
            return bool(current > target)
        return bool(current >= target)

    return compare


@dataclass
class _Plan:
    """How to answer a WHERE clause: a slice of the sorted keys, then a residual filter."""

    first: int | None  # smallest SystemModstamp second allowed
    last: int | None  # largest SystemModstamp second allowed
    residual: Any  # what bisection does not cover (None: nothing)


def _plan(node: Any) -> _Plan:
    """Turn top-level `SystemModstamp` range conjuncts into whole-second bounds (stamps are
    whole seconds, so this is exact) and keep every other condition as the residual."""
    first: int | None = None
    last: int | None = None
    rest: list[Any] = []
    conjuncts = node.parts if isinstance(node, BoolOp) and node.op == "AND" else [node]
    for part in conjuncts:
        if part is None:
            continue
        if (
            not isinstance(part, Comparison)
            or part.field != "SystemModstamp"
            or not isinstance(part.value, datetime)
            or part.op not in (">=", ">", "<", "<=")
        ):
            rest.append(part)
            continue
        seconds = part.value.timestamp()
        whole = seconds == int(seconds)
        if part.op in (">=", ">"):
            bound = int(seconds) + (0 if whole and part.op == ">=" else 1)
            first = bound if first is None else max(first, bound)
        else:
            bound = int(seconds) - (1 if whole and part.op == "<" else 0)
            last = bound if last is None else min(last, bound)
    residual = None if not rest else rest[0] if len(rest) == 1 else BoolOp("AND", rest)
    return _Plan(first, last, residual)


# ----------------------------------------------------------------------------- store


class _Comparable(dict[str, Any]):
    """A row's values as WHERE compares them, converted on first use of each field."""

    __slots__ = ("_schema", "_values")

    def __init__(self, values: dict[str, Any], schema: dict[str, str]) -> None:
        super().__init__()
        self._values = values
        self._schema = schema

    def __missing__(self, name: str) -> Any:
        value = _comparable(self._values.get(name), self._schema[name])
        self[name] = value
        return value


@dataclass
class _Row:
    values: dict[str, Any]  # JSON-ready values as the REST API renders them
    cmp: _Comparable  # comparable values for WHERE evaluation
    stamp: int  # SystemModstamp, epoch seconds
    json_cache: dict[tuple[str, tuple[str, ...]], bytes] = field(default_factory=dict)


class _Table:
    """One sObject's rows, with `(stamp, id)` keys kept sorted."""

    def __init__(self, name: str, schema: dict[str, str]) -> None:
        self.name = name
        self.schema = schema
        self.rows: dict[str, _Row] = {}
        self.keys: list[tuple[int, str]] = []

    def put(self, record_id: str, values: dict[str, Any], *, resort: bool = True) -> None:
        old = self.rows.get(record_id)
        if old is not None and resort:
            index = bisect.bisect_left(self.keys, (old.stamp, record_id))
            del self.keys[index]
        stamp = int(datetime.fromisoformat(values["SystemModstamp"]).timestamp())
        self.rows[record_id] = _Row(values, _Comparable(values, self.schema), stamp)
        if resort:
            bisect.insort(self.keys, (stamp, record_id))

    def resort(self) -> None:
        self.keys = sorted((row.stamp, rid) for rid, row in self.rows.items())

    def _candidates(self, plan: _Plan) -> list[tuple[int, str]]:
        lo = 0 if plan.first is None else bisect.bisect_left(self.keys, (plan.first, ""))
        hi = len(self.keys)
        if plan.last is not None:
            hi = bisect.bisect_right(self.keys, (plan.last, "\uffff"))
        return self.keys[lo : max(lo, hi)]

    def select(self, query: ParsedQuery, include_deleted: bool) -> list[_Row]:
        plan = _plan(query.where)
        rows = [self.rows[rid] for _stamp, rid in self._candidates(plan)]
        if not include_deleted:
            rows = [row for row in rows if not row.values["IsDeleted"]]
        if plan.residual is not None:
            predicate = compile_where(plan.residual, self.schema)
            rows = [row for row in rows if predicate(row.cmp)]
        if query.order_by and query.order_by != [("SystemModstamp", False), ("Id", False)]:
            for name, descending in reversed(query.order_by):
                rows.sort(key=lambda r, n=name: (r.cmp[n] is None, r.cmp[n]), reverse=descending)
        if query.limit is not None:
            rows = rows[: query.limit]
        return rows


@dataclass
class _Cursor:
    path: str  # "query" or "queryAll"
    chunks: list[bytes]
    total: int


@dataclass
class _BulkJob:
    job_id: str
    operation: str
    sobject: str
    api_version: str
    header: list[str]
    rows: list[list[str]]
    polls_before_complete: int
    state: str = "UploadComplete"
    error_message: str | None = None


@dataclass
class Fault:
    """One injected misbehaviour, consumed when a request to `endpoint` arrives.

    `endpoint` is a name from `FakeSalesforce.ENDPOINTS`, "api" (everything but the token
    endpoint) or "any". With `status` None the request is answered normally after `delay`.
    """

    endpoint: str = "api"
    status: int | None = 500
    error_code: str = "UNKNOWN_EXCEPTION"
    message: str = "An unexpected error occurred. Please include this ErrorId."
    delay: float = 0.0
    raw_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake received (`soql`: the query of a Bulk job it created)."""

    method: str
    path: str
    endpoint: str
    query: str
    soql: str = ""


class FakeSalesforce:
    """An in-memory Salesforce org behind a FastAPI app (`.app`)."""

    ENDPOINTS = (
        "token",
        "query",
        "queryMore",
        "limits",
        "bulk_create",
        "bulk_status",
        "bulk_results",
        "get_deleted",
        "other",
    )

    def __init__(
        self,
        *,
        client_id: str = "3MVG9fake.client.id",
        client_secret: str = "fake-client-secret-0001",
        username: str = "integration@example.com",
        password: str = "correct-horse-battery",
        security_token: str = "SeCuRiTyToKeN42",
        multi_currency: bool = False,
        seed: int = 7,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.security_token = security_token
        self.client_credentials_enabled = True
        #: instance_url returned at login; None = the URL the token request came to.
        self.instance_url: str | None = None
        self.schemas = {name: dict(schema) for name, schema in SCHEMAS.items()}
        if multi_currency:
            for schema in self.schemas.values():
                schema["CurrencyIsoCode"] = STRING
        self.multi_currency = multi_currency
        self.tables = {name: _Table(name, schema) for name, schema in self.schemas.items()}
        #: Most records a REST batch holds (Salesforce: batchSize header, 200..2000).
        self.page_size = 2000
        #: Status polls a Bulk job answers `InProgress` before `JobComplete`.
        self.bulk_polls_before_complete = 1
        #: When set, Bulk jobs end `Failed` with this error message.
        self.bulk_failure: str | None = None
        #: When set, a REST query (not COUNT()) whose SystemModstamp range spans more than
        #: this many seconds (or is unbounded) answers 400 QUERY_TIMEOUT.
        self.query_timeout_above_seconds: int | None = None
        #: The delete log `sObject Get Deleted` reads: (sObject, Id, deleted at, epoch s).
        self.delete_log: list[tuple[str, str, int]] = []
        #: How far back the delete log answers (Salesforce: 15 days).
        self.delete_log_days = 15
        #: A stuck cursor: every REST batch after the first and every Bulk result set
        #: name themselves as the next one (the same nextRecordsUrl / Sforce-Locator).
        self.stuck_cursors = False
        self.api_used = 0
        self.api_limit = 100_000
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self.tokens: set[str] = set()
        self.issued_tokens: list[str] = []
        self._cursors: dict[str, _Cursor] = {}
        #: Changes made but not yet committed: (sObject, Id, the row once committed).
        self._pending: list[tuple[str, str, dict[str, Any]]] = []
        self._jobs: dict[str, _BulkJob] = {}
        self._clock = int(START.timestamp())
        self._stamp_cache: tuple[int, str] = (-1, "")
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self.app = self._build_app()

    # ------------------------------------------------------------------- data control

    def add_field(self, sobject: str, name: str, ftype: str) -> None:
        """Declare a custom field (e.g. `Customer_Type__c`); existing rows get null."""
        with self._lock:
            table = self.tables[sobject]
            table.schema[name] = ftype
            for row in table.rows.values():
                row.values.setdefault(name, None)
                row.cmp.pop(name, None)
                row.json_cache.clear()

    def tick(self, seconds: int = 1) -> datetime:
        """Advance the org's clock; return the new time."""
        with self._lock:
            self._clock += seconds
            return datetime.fromtimestamp(self._clock, UTC)

    def now(self) -> datetime:
        """The org's current time (whole seconds, as SystemModstamp stores it)."""
        return datetime.fromtimestamp(self._clock, UTC)

    def newest_stamp(self, sobject: str) -> datetime | None:
        """The latest SystemModstamp of `sobject`, if any."""
        keys = self.tables[sobject].keys
        return datetime.fromtimestamp(keys[-1][0], UTC) if keys else None

    def _stamp_text(self, at: datetime | None) -> str:
        if at is not None:
            return sf_datetime(at)
        if self._stamp_cache[0] != self._clock:
            self._stamp_cache = (self._clock, sf_datetime(self.now()))
        return self._stamp_cache[1]

    def _new_id(self, sobject: str) -> str:
        return f"{PREFIXES[sobject]}5g{next(self._ids):011d}AAA"

    def insert(
        self, sobject: str, at: datetime | None = None, *, committed: bool = True, **values: Any
    ) -> str:
        """Create a record stamped `at` (default: now); return its id.

        With `committed=False` it stays invisible until `commit_pending()`.
        """
        with self._lock:
            table = self.tables[sobject]
            unknown = set(values) - set(table.schema)
            if unknown:
                raise KeyError(f"unknown fields {sorted(unknown)} on {sobject}")
            record_id = self._new_id(sobject)
            row = self._new_row(table, record_id, self._stamp_text(at), values)
            if committed:
                table.put(record_id, row)
            else:
                self._pending.append((sobject, record_id, row))
            return record_id

    def _new_row(
        self, table: _Table, record_id: str, stamp: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(table.schema)
        row.update(
            Id=record_id,
            IsDeleted=False,
            CreatedDate=stamp,
            LastModifiedDate=stamp,
            SystemModstamp=stamp,
            OwnerId="0055g00000AbCdEAAV",
        )
        if table.name == "Opportunity":
            row.update(IsClosed=False, IsWon=False)
        if table.name == "Lead":
            row.update(IsConverted=False)
        row.update(values)
        return row

    def update(
        self,
        sobject: str,
        record_id: str,
        at: datetime | None = None,
        *,
        committed: bool = True,
        **values: Any,
    ) -> None:
        """Change fields of a record and restamp it (default: now).

        With `committed=False` readers keep seeing the previous version until
        `commit_pending()`, although the new version's SystemModstamp is set now.
        """
        with self._lock:
            table = self.tables[sobject]
            row = dict(table.rows[record_id].values)
            unknown = set(values) - set(table.schema)
            if unknown:
                raise KeyError(f"unknown fields {sorted(unknown)} on {sobject}")
            row.update(values)
            stamp = self._stamp_text(at)
            row["LastModifiedDate"] = stamp
            row["SystemModstamp"] = stamp
            if committed:
                table.put(record_id, row)
            else:
                self._pending.append((sobject, record_id, row))

    def commit_pending(self) -> list[str]:
        """Make every uncommitted change visible, keeping its SystemModstamp; their ids."""
        with self._lock:
            pending, self._pending = self._pending, []
            for sobject, record_id, row in pending:
                self.tables[sobject].put(record_id, row)
            return [record_id for _sobject, record_id, _row in pending]

    def delete(self, sobject: str, record_id: str, at: datetime | None = None) -> None:
        """Soft-delete (to the Recycle Bin): `IsDeleted = true`, restamped, logged."""
        self.update(sobject, record_id, at, IsDeleted=True)
        with self._lock:
            stamp = int((at or self.now()).timestamp())
            self.delete_log.append((sobject, record_id, stamp))

    def purge(self, sobject: str, record_id: str, *, logged: bool = True) -> None:
        """Remove a record for good (emptied Recycle Bin, hard delete): no row is left,
        not even for `queryAll`. With `logged=False` the delete log has no entry either
        (purged from the log, or older than its reach): only an id comparison finds it."""
        with self._lock:
            table = self.tables[sobject]
            row = table.rows.pop(record_id)
            index = bisect.bisect_left(table.keys, (row.stamp, record_id))
            del table.keys[index]
            if not logged:
                self.delete_log = [e for e in self.delete_log if e[1] != record_id]
            elif not row.values["IsDeleted"]:
                self.delete_log.append((sobject, record_id, self._clock))

    def restamp_all(self, sobject: str, at: datetime) -> None:
        """Give every record of `sobject` the same SystemModstamp."""
        with self._lock:
            table = self.tables[sobject]
            stamp = sf_datetime(at)
            for record_id, row in list(table.rows.items()):
                values = dict(row.values, SystemModstamp=stamp)
                if datetime.fromisoformat(values["CreatedDate"]) > at:
                    values["CreatedDate"] = stamp
                table.put(record_id, values, resort=False)
            table.resort()

    def live_ids(self, sobject: str) -> set[str]:
        """Ids of records not in the Recycle Bin."""
        with self._lock:
            return {
                rid for rid, r in self.tables[sobject].rows.items() if not r.values["IsDeleted"]
            }

    def record(self, sobject: str, record_id: str) -> dict[str, Any]:
        """A copy of a stored record's values."""
        return dict(self.tables[sobject].rows[record_id].values)

    def seed(self, sobject: str, n: int, *, per_second: int = 2) -> list[str]:
        """Create `n` plausible records, `per_second` sharing each SystemModstamp.

        A fast path for big benchmarks: stamps only grow, so rows are appended to the
        sorted keys instead of inserted one by one."""
        ids = []
        with self._lock:
            table = self.tables[sobject]
            pool = [self._plausible(sobject) for _ in range(min(n, 512))]
            for i in range(n):
                if i % per_second == 0:
                    self.tick()
                record_id = self._new_id(sobject)
                row = self._new_row(table, record_id, self._stamp_text(None), pool[i % len(pool)])
                table.rows[record_id] = _Row(row, _Comparable(row, table.schema), self._clock)
                key = (self._clock, record_id)
                if table.keys and table.keys[-1] > key:
                    bisect.insort(table.keys, key)  # something was stamped in the future
                else:
                    table.keys.append(key)
                ids.append(record_id)
        return ids

    def _plausible(self, sobject: str) -> dict[str, Any]:
        rng = self._rng
        currency = {"CurrencyIsoCode": rng.choice(["EUR", "USD"])} if self.multi_currency else {}
        if sobject == "Lead":
            return {
                "FirstName": rng.choice(["Ana", "Bo", "Chloé", "Dmitri", "Eve"]),
                "LastName": rng.choice(["Martin", "O'Neil", "Durand", "Nguyen"]),
                "Company": rng.choice(["Acme", "Tartempion", "Globex", "Initech"]),
                "Email": f"lead{rng.randrange(10**6)}@example.com",
                "Status": rng.choice(LEAD_STATUSES),
                "LeadSource": rng.choice([*LEAD_SOURCES, None]),
                "Country": rng.choice(["France", "Belgium", "Côte d'Ivoire"]),
                "Industry": rng.choice(["Technology", "Retail", None]),
                **currency,
            }
        stage = rng.choice(list(STAGES))
        probability, closed, won, forecast = STAGES[stage]
        return {
            "Name": f"Deal {rng.randrange(10**5)}",
            "AccountId": "0015g00000XyZaBAAV",
            "StageName": stage,
            "IsClosed": closed,
            "IsWon": won,
            "CloseDate": (START.date() + timedelta(days=rng.randrange(0, 300))).isoformat(),
            "Amount": rng.choice(
                [None, 1200.0, 15000.5, 99999.99, float(rng.randrange(100, 10**6))]
            ),
            "Probability": float(probability),
            "Type": rng.choice([*OPPORTUNITY_TYPES, None]),
            "LeadSource": rng.choice([*LEAD_SOURCES, None]),
            "ForecastCategoryName": forecast,
            **currency,
        }

    # ------------------------------------------------------------------- fault control

    def inject(self, fault: Fault) -> None:
        """Queue a fault (faults are consumed in order of injection)."""
        with self._lock:
            self.faults.append(fault)

    def fail(
        self,
        status: int,
        error_code: str,
        message: str = "",
        *,
        endpoint: str = "api",
        times: int = 1,
    ) -> None:
        """Answer the next `times` requests to `endpoint` with an error."""
        self.inject(
            Fault(
                endpoint,
                status,
                error_code,
                message or error_code.replace("_", " ").lower(),
                times=times,
            )
        )

    def slow(self, seconds: float, *, endpoint: str = "api", times: int = 1) -> None:
        """Delay the next `times` answers of `endpoint` by `seconds`."""
        self.inject(Fault(endpoint, None, delay=seconds, times=times))

    def malformed(self, body: bytes, *, endpoint: str = "query", times: int = 1) -> None:
        """Answer 200 with `body` (e.g. truncated JSON) instead of the real page."""
        self.inject(Fault(endpoint, 200, raw_body=body, times=times))

    def expire_sessions(self) -> None:
        """Invalidate every issued token (the org's session timeout)."""
        with self._lock:
            self.tokens.clear()

    def expire_cursors(self) -> None:
        """Forget every open query cursor (`INVALID_QUERY_LOCATOR` on queryMore)."""
        with self._lock:
            self._cursors.clear()

    def requests_to(self, endpoint: str) -> int:
        """How many requests `endpoint` received."""
        return sum(1 for r in self.log if r.endpoint == endpoint)

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.endpoint in (endpoint, "any") or (
                    fault.endpoint == "api" and endpoint != "token"
                ):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------- HTTP

    def _limit_headers(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_limit}"}

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        app.add_api_route("/services/oauth2/token", self._token_route, methods=["POST"])
        app.add_api_route(
            "/services/data/{rest:path}",
            self._data_route,
            methods=["GET", "POST", "PATCH", "DELETE"],
        )
        return app

    async def _apply_fault(self, endpoint: str) -> Response | None:
        fault = self._take_fault(endpoint)
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            return None
        headers = {**self._limit_headers(), **fault.headers} if endpoint != "token" else {}
        if fault.raw_body is not None:
            return Response(
                fault.raw_body,
                status_code=fault.status,
                media_type="application/json",
                headers=headers,
            )
        if fault.status == 401:
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid", headers)
        return _error(fault.status, fault.error_code, fault.message, headers)

    async def _token_route(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type", "")
        self.log.append(LoggedRequest("POST", request.url.path, "token", f"grant_type={grant}"))
        faulty = await self._apply_fault("token")
        if faulty is not None:
            return faulty

        def refuse(status: int, error: str, description: str) -> Response:
            body = {"error": error, "error_description": description}
            return Response(json.dumps(body), status, media_type="application/json")

        if grant not in ("password", "client_credentials"):
            return refuse(400, "unsupported_grant_type", "grant type not supported")
        if form.get("client_id") != self.client_id:
            return refuse(400, "invalid_client_id", "client identifier invalid")
        if form.get("client_secret") != self.client_secret:
            return refuse(400, "invalid_client", "invalid client credentials")
        if grant == "password":
            expected = self.password + self.security_token
            if form.get("username") != self.username or form.get("password") != expected:
                return refuse(400, "invalid_grant", "authentication failure")
        elif not self.client_credentials_enabled:
            return refuse(400, "invalid_grant", "no client credentials user enabled")
        token = "00D5g000004FaKe!" + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens.add(token)
            self.issued_tokens.append(token)
        instance = self.instance_url or f"{request.url.scheme}://{request.url.netloc}"
        body = {
            "access_token": token,
            "instance_url": instance,
            "id": "https://login.salesforce.com/id/00D5g000004FaKeEAA/0055g00000AbCdEAAV",
            "token_type": "Bearer",
            "issued_at": str(int(datetime.now(UTC).timestamp() * 1000)),
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
        }
        return Response(json.dumps(body), 200, media_type="application/json")

    @staticmethod
    def _endpoint(method: str, rest: str) -> str:
        parts = [p for p in rest.split("/") if p]
        if len(parts) < 2:
            return "other"
        tail = parts[1:]
        if tail[0] in ("query", "queryAll"):
            return "query" if len(tail) == 1 else "queryMore"
        if tail[0] == "limits":
            return "limits"
        if tail[0] == "sobjects" and len(tail) == 3 and tail[2] == "deleted":
            return "get_deleted"
        if tail[:2] == ["jobs", "query"]:
            if len(tail) == 2 and method == "POST":
                return "bulk_create"
            if len(tail) == 4 and tail[3] == "results":
                return "bulk_results"
            if len(tail) == 3:
                return "bulk_status"
        return "other"

    async def _data_route(self, request: Request, rest: str) -> Response:
        endpoint = self._endpoint(request.method, rest)
        soql = ""
        if endpoint == "bulk_create":
            try:
                soql = str(json.loads(await request.body()).get("query", ""))
            except (ValueError, AttributeError):
                soql = ""
        self.log.append(
            LoggedRequest(request.method, request.url.path, endpoint, request.url.query, soql)
        )
        faulty = await self._apply_fault(endpoint)
        if faulty is not None:
            return faulty
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in self.tokens:
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        with self._lock:
            if self.api_used >= self.api_limit:
                return _error(
                    403,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                    self._limit_headers(),
                )
            self.api_used += 1
        parts = [p for p in rest.split("/") if p]
        version = parts[0][1:] if parts and parts[0].startswith("v") else ""
        if version not in SUPPORTED_API_VERSIONS:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        tail = parts[1:]
        body_bytes = await request.body()
        try:
            response = self._dispatch(request, endpoint, version, tail, body_bytes)
        except SoqlError as exc:
            response = _error(400, exc.code, exc.message)
        for name, value in self._limit_headers().items():
            response.headers[name] = value
        return response

    def _dispatch(
        self, request: Request, endpoint: str, version: str, tail: list[str], body: bytes
    ) -> Response:
        if endpoint == "query":
            soql = request.query_params.get("q")
            if not soql:
                return _error(400, "MALFORMED_QUERY", "A query string has to be specified")
            batch = _batch_size(request.headers.get("sforce-query-options"))
            return self._query(soql, tail[0] == "queryAll", version, min(batch, self.page_size))
        if endpoint == "queryMore":
            batch = _batch_size(request.headers.get("sforce-query-options"))
            return self._query_more(tail[1], min(batch, self.page_size))
        if endpoint == "limits":
            remaining = max(0, self.api_limit - self.api_used)
            limits = {
                "DailyApiRequests": {"Max": self.api_limit, "Remaining": remaining},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000 - len(self._jobs)},
            }
            return Response(json.dumps(limits), media_type="application/json")
        if endpoint == "bulk_create":
            return self._bulk_create(body, version)
        if endpoint == "bulk_status":
            return self._bulk_status(tail[2])
        if endpoint == "bulk_results":
            return self._bulk_results(request, tail[2])
        if endpoint == "get_deleted":
            return self._get_deleted(request, tail[1])
        return _error(404, "NOT_FOUND", "The requested resource does not exist")

    # ------------------------------------------------------------------- REST query

    def _get_deleted(self, request: Request, sobject: str) -> Response:
        # Salesforce ignores the seconds of both bounds (SOAP API, getDeleted()); the fake
        # does too, and refuses a start beyond the log's reach like INVALID_REPLICATION_DATE.
        if sobject not in self.tables:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        try:
            start = datetime.fromisoformat(request.query_params["start"])
            end = datetime.fromisoformat(request.query_params["end"])
        except (KeyError, ValueError):
            return _error(400, "MALFORMED_QUERY", "start and end must be ISO 8601 datetimes")
        if start.tzinfo is None or end.tzinfo is None or end < start:
            return _error(400, "INVALID_REPLICATION_DATE", "invalid start or end")
        first = int(start.replace(second=0, microsecond=0).timestamp())
        last = int(end.replace(second=0, microsecond=0).timestamp())
        earliest = self._clock - self.delete_log_days * 86400
        if first < earliest:
            return _error(400, "INVALID_REPLICATION_DATE", "startDate is before the log's reach")
        with self._lock:
            entries = [
                {"id": rid, "deletedDate": sf_datetime(datetime.fromtimestamp(at, UTC))}
                for name, rid, at in self.delete_log
                if name == sobject and first <= at <= last
            ]
        body = {
            "deletedRecords": entries,
            "earliestDateAvailable": sf_datetime(datetime.fromtimestamp(earliest, UTC)),
            "latestDateCovered": sf_datetime(datetime.fromtimestamp(last, UTC)),
        }
        return Response(json.dumps(body), media_type="application/json")

    def _query(self, soql: str, include_deleted: bool, version: str, batch: int) -> Response:
        with self._lock:
            query = parse_soql(soql, self.schemas)
            limit = self.query_timeout_above_seconds
            if limit is not None and not query.count:
                plan = _plan(query.where)
                if plan.first is None or plan.last is None or plan.last - plan.first >= limit:
                    raise SoqlError("QUERY_TIMEOUT", "Your query request was running for too long.")
            table = self.tables[query.sobject]
            rows = table.select(query, include_deleted)
            if query.count:
                body = {"totalSize": len(rows), "done": True, "records": []}
                return Response(json.dumps(body), media_type="application/json")
            key = (version, tuple(query.fields))
            chunks = []
            for row in rows:
                cached = row.json_cache.get(key)
                if cached is None:
                    record = {
                        "attributes": {
                            "type": table.name,
                            "url": f"/services/data/v{version}/sobjects/{table.name}/"
                            + row.values["Id"],
                        },
                        **{name: row.values.get(name) for name in query.fields},
                    }
                    cached = _ENCODER.encode(record).encode()
                    row.json_cache[key] = cached
                chunks.append(cached)
            path = f"/services/data/v{version}/{'queryAll' if include_deleted else 'query'}"
            cursor_id = "01g5g" + secrets.token_hex(7).upper()[:13]
            cursor = _Cursor(path, chunks, len(chunks))
            if len(chunks) > batch:
                self._cursors[cursor_id] = cursor
            return _page(cursor, cursor_id, 0, batch)

    def _query_more(self, locator: str, batch: int) -> Response:
        cursor_id, _, offset = locator.rpartition("-")
        with self._lock:
            cursor = self._cursors.get(cursor_id)
        if cursor is None or not offset.isdigit():
            return _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        response = _page(cursor, cursor_id, int(offset), batch, stuck=self.stuck_cursors)
        if int(offset) + batch >= cursor.total:
            with self._lock:
                self._cursors.pop(cursor_id, None)
        return response

    # ------------------------------------------------------------------- Bulk API 2.0

    def _bulk_create(self, body: bytes, version: str) -> Response:
        try:
            payload = json.loads(body)
        except ValueError:
            return _error(400, "JSON_PARSER_ERROR", "could not parse the request body")
        operation = payload.get("operation")
        if operation not in ("query", "queryAll"):
            return _error(400, "INVALIDJOB", f"invalid operation {operation!r}")
        with self._lock:
            query = parse_soql(str(payload.get("query", "")), self.schemas)
            if query.count:
                return _error(
                    400, "INVALIDJOB", "Aggregate Relationships not supported in Bulk Query"
                )
            table = self.tables[query.sobject]
            rows = table.select(query, operation == "queryAll")
            # PK-chunked results come back in no particular time order: here, by Id.
            rows.sort(key=lambda r: r.values["Id"])
            csv_rows = [
                [_csv_value(row.values.get(name), table.schema[name]) for name in query.fields]
                for row in rows
            ]
            job_id = "7505g" + secrets.token_hex(7).upper()[:13]
            job = _BulkJob(
                job_id,
                operation,
                table.name,
                version,
                list(query.fields),
                csv_rows,
                self.bulk_polls_before_complete,
            )
            self._jobs[job_id] = job
        return Response(json.dumps(_job_info(job)), media_type="application/json")

    def _bulk_status(self, job_id: str) -> Response:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return _error(404, "NOT_FOUND", "The requested resource does not exist")
            if job.state in ("UploadComplete", "InProgress"):
                if self.bulk_failure is not None:
                    job.state, job.error_message = "Failed", self.bulk_failure
                elif job.polls_before_complete > 0:
                    job.polls_before_complete -= 1
                    job.state = "InProgress"
                else:
                    job.state = "JobComplete"
            return Response(json.dumps(_job_info(job)), media_type="application/json")

    def _bulk_results(self, request: Request, job_id: str) -> Response:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        if job.state != "JobComplete":
            return _error(400, "INVALIDJOB", f"job {job_id} is not complete: {job.state}")
        locator = request.query_params.get("locator")
        try:
            start = int(base64.b64decode(locator).decode()) if locator else 0
            max_records = int(request.query_params.get("maxRecords") or 50_000)
        except ValueError:
            return _error(400, "INVALID_LOCATOR", "invalid locator or maxRecords")
        chunk = job.rows[start : start + max_records]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(job.header)
        writer.writerows(chunk)
        end = start + len(chunk)
        next_locator = (
            base64.b64encode(str(end).encode()).decode() if end < len(job.rows) else "null"
        )
        if self.stuck_cursors and locator:
            next_locator = locator
        return Response(
            out.getvalue().encode(),
            media_type="text/csv",
            headers={"Sforce-Locator": next_locator, "Sforce-NumberOfRecords": str(len(chunk))},
        )


def _batch_size(header: str | None) -> int:
    # `Sforce-Query-Options: batchSize=N`, clamped to 200..2000 like Salesforce.
    if header:
        match = re.search(r"batchSize=(\d+)", header)
        if match:
            return max(200, min(2000, int(match.group(1))))
    return 2000


def _page(
    cursor: _Cursor, cursor_id: str, offset: int, batch: int, *, stuck: bool = False
) -> Response:
    chunk: Sequence[bytes] = cursor.chunks[offset : offset + batch]
    done = offset + batch >= cursor.total
    head = b'{"totalSize":%d,"done":%s,' % (cursor.total, b"true" if done else b"false")
    if not done:
        head += b'"nextRecordsUrl":"%s/%s-%d",' % (
            cursor.path.encode(),
            cursor_id.encode(),
            offset if stuck else offset + batch,
        )
    body = head + b'"records":[' + b",".join(chunk) + b"]}"
    return Response(body, media_type="application/json")


def _csv_value(value: Any, ftype: str) -> str:
    # Bulk API 2.0 CSV: null is an empty field, booleans lower-case, datetimes in Z form.
    if value is None:
        return ""
    if ftype == BOOLEAN:
        return "true" if value else "false"
    if ftype == DATETIME:
        return datetime.fromisoformat(value).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return str(value)


def _job_info(job: _BulkJob) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": job.job_id,
        "operation": job.operation,
        "object": job.sobject,
        "createdById": "0055g00000AbCdEAAV",
        "createdDate": sf_datetime(START),
        "systemModstamp": sf_datetime(START),
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": float(job.api_version),
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    }
    if job.state == "JobComplete":
        info["numberRecordsProcessed"] = len(job.rows)
    if job.error_message:
        info["errorMessage"] = job.error_message
    return info
