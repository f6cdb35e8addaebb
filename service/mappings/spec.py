"""The metric spec: what a key result's value is, as JSON a mapping stores.

The shape is checked here (pydantic); whether the connector, kind and fields exist and fit
is checked against the workspace in `service.mappings.compile`.
"""

from __future__ import annotations

import enum
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.base import RecordKind
from service.errors import InvalidError
from service.json_types import as_documented
from service.settings import Settings

# ---------------------------------------------------------------------------- filters


class Op(enum.StrEnum):
    eq = "eq"
    neq = "neq"
    in_ = "in"
    not_in = "not_in"
    gt = "gt"
    gte = "gte"
    lt = "lt"
    lte = "lte"
    between = "between"
    is_null = "is_null"
    contains = "contains"


class Match(enum.StrEnum):
    all = "all"
    any = "any"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filter(_Strict):
    """One condition on a normalised field (`status`) or a raw source field (`raw.Name`;
    nested vendor properties as `raw.person_properties.Customer Type`).

    Operators fit the field's type: text `eq neq in not_in contains is_null`; numbers and
    dates `eq neq in not_in gt gte lt lte between is_null`; booleans `eq neq is_null`;
    normalised datetimes `gt gte lt lte between is_null`. `neq` and `not_in` also match
    records that lack the field; `between` includes both bounds; `contains` is
    case-sensitive. A raw value of another JSON type than the field's counts as absent.
    """

    field: str = Field(min_length=1, max_length=300, examples=["status", "raw.Customer_Type__c"])
    op: Op
    #: A scalar, a list for `in`/`not_in`, `[low, high]` for `between` (both included),
    #: a boolean for `is_null` (default true).
    value: JsonValue = None


class FilterGroup(_Strict):
    """Conditions combined with `all` (AND) or `any` (OR); groups nest."""

    match: Match = Match.all
    filters: list[Condition] = Field(min_length=1, max_length=50)


def _condition_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "group" if "filters" in value else "condition"
    return "group" if isinstance(value, FilterGroup) else "condition"


Condition = Annotated[
    Annotated[Filter, Tag("condition")] | Annotated[FilterGroup, Tag("group")],
    Discriminator(_condition_tag),
]
FilterGroup.model_rebuild()

# ---------------------------------------------------------------------------- windows


class KeyResultWindow(_Strict):
    """The key result's own window (its objective's period unless it sets one)."""

    type: Literal["key_result"] = "key_result"


class CustomWindow(_Strict):
    """A fixed range of local days `[start, end)`."""

    type: Literal["custom"]
    start: date = Field(ge=date(1900, 1, 1))
    end: date = Field(le=date(2200, 1, 1))

    @field_validator("start", "end", mode="before")
    @classmethod
    def _as_documented(cls, value: object, info: ValidationInfo) -> object:
        return as_documented(cls, value, info)

    @model_validator(mode="after")
    def _ordered(self) -> CustomWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start (windows are half-open [start, end))")
        return self


class RollingWindow(_Strict):
    """The last `days` local days, today included."""

    type: Literal["rolling"]
    days: int = Field(ge=1, le=3660)


class ToDateWindow(_Strict):
    """From the start of the current year / quarter / month / ISO week through today."""

    type: Literal["to_date"]
    unit: Literal["year", "quarter", "month", "week"]


WindowSpec = Annotated[
    KeyResultWindow | CustomWindow | RollingWindow | ToDateWindow, Field(discriminator="type")
]

# ---------------------------------------------------------------------------- metrics


class DateField(enum.StrEnum):
    """Which date decides whether a record falls in the window."""

    created = "created"
    closed = "closed"
    modified = "modified"
    #: A survey response's answer time (its creation time at the source).
    answered = "answered"


class _Over(_Strict):
    """One record kind of one connector, filtered, in a window."""

    connector_id: int = Field(ge=1, le=2**31 - 1)
    kind: RecordKind
    match: Match = Match.all
    filters: list[Condition] = Field(default_factory=list, max_length=50)
    date_field: DateField = DateField.created
    window: WindowSpec = Field(default_factory=KeyResultWindow)


class CountSpec(_Over):
    """How many records match."""

    type: Literal["count"]


class SumSpec(_Over):
    """The sum of a numeric field over the matching records."""

    type: Literal["sum"]
    field: str = Field(min_length=1, max_length=300)


class AverageSpec(_Over):
    """The mean of a numeric field over the matching records that have it."""

    type: Literal["average"]
    field: str = Field(min_length=1, max_length=300)


class CountDistinctSpec(_Over):
    """How many distinct values a field takes over the matching records."""

    type: Literal["count_distinct"]
    field: str = Field(min_length=1, max_length=300)


AggregateSpec = Annotated[
    CountSpec | SumSpec | AverageSpec | CountDistinctSpec, Field(discriminator="type")
]


class RatioSpec(_Strict):
    """100 × numerator ÷ denominator, in percent; null when the denominator is 0."""

    type: Literal["ratio"]
    numerator: AggregateSpec
    denominator: AggregateSpec


class NpsSpec(_Over):
    """Net Promoter Score of survey responses: 100 × (promoters − detractors) ÷ responses."""

    type: Literal["nps"]
    kind: RecordKind = RecordKind.survey_response
    #: The 0..10 score: promoters 9-10, passives 7-8, detractors 0-6.
    score_field: str = Field(default="score", min_length=1, max_length=300)
    date_field: DateField = DateField.answered


MetricSpec = Annotated[
    CountSpec | SumSpec | AverageSpec | CountDistinctSpec | RatioSpec | NpsSpec,
    Field(discriminator="type"),
]

SimpleSpec = CountSpec | SumSpec | AverageSpec | CountDistinctSpec | NpsSpec

#: Values pydantic inserts in error locations for tagged unions; they are not field names.
UNION_TAGS = frozenset(
    {
        "condition",
        "group",
        "key_result",
        "custom",
        "rolling",
        "to_date",
        "count",
        "sum",
        "average",
        "count_distinct",
        "ratio",
        "nps",
    }
)

metric_spec_adapter: TypeAdapter[MetricSpec] = TypeAdapter(MetricSpec)


def parse_spec(data: Any) -> MetricSpec:
    """A stored spec (JSON) as its model; raises pydantic.ValidationError."""
    return metric_spec_adapter.validate_python(data)


def dump_spec(spec: MetricSpec) -> dict[str, Any]:
    """The spec as the JSON stored in a mapping version (defaults made explicit)."""
    dumped: dict[str, Any] = metric_spec_adapter.dump_python(spec, mode="json")
    return dumped


def check_limits(spec: MetricSpec, settings: Settings) -> None:
    """Refuse a spec larger than the settings allow, naming where it goes over.

    Called as soon as a request's spec is parsed, before anything is planned or evaluated:
    the work of evaluating grows with the number of conditions and their nesting, and
    pydantic alone bounds only each list (50 entries), not their product.
    """
    sides = (
        [("spec.numerator.filters", spec.numerator), ("spec.denominator.filters", spec.denominator)]
        if isinstance(spec, RatioSpec)
        else [("spec.filters", spec)]
    )
    count = 0
    for top, over in sides:
        # Iterative, so that no nesting the parser accepted can exhaust the stack here.
        pending: list[tuple[str, list[Condition], int]] = [(top, over.filters, 1)]
        while pending:
            path, conditions, depth = pending.pop()
            count += len(conditions)
            if count > settings.spec_filters_max_count:
                raise InvalidError(
                    f"a spec holds at most {settings.spec_filters_max_count} filters and "
                    "groups in all",
                    field=top,
                )
            for i, condition in enumerate(conditions):
                where = f"{path}.{i}"
                if isinstance(condition, FilterGroup):
                    if depth > settings.spec_group_max_depth:
                        raise InvalidError(
                            f"filter groups nest at most {settings.spec_group_max_depth} deep",
                            field=where,
                        )
                    pending.append((f"{where}.filters", condition.filters, depth + 1))
                elif (
                    isinstance(condition.value, list)
                    and len(condition.value) > settings.spec_filter_values_max_count
                ):
                    raise InvalidError(
                        f"a filter lists at most {settings.spec_filter_values_max_count} values",
                        field=f"{where}.value",
                    )


# ---------------------------------------------------------------------------- examples

EXAMPLES: dict[str, dict[str, Any]] = {
    "count": {
        "summary": "Qualified leads created in the key result's window",
        "value": {
            "type": "count",
            "connector_id": 1,
            "kind": "lead",
            "filters": [{"field": "status", "op": "eq", "value": "Qualified"}],
            "date_field": "created",
        },
    },
    "sum": {
        "summary": "Amount of won opportunities closed in the window (key result's currency)",
        "value": {
            "type": "sum",
            "field": "amount",
            "connector_id": 1,
            "kind": "opportunity",
            "filters": [{"field": "is_won", "op": "eq", "value": True}],
            "date_field": "closed",
        },
    },
    "ratio": {
        "summary": "Won ÷ closed opportunities, in percent",
        "value": {
            "type": "ratio",
            "numerator": {
                "type": "count",
                "connector_id": 1,
                "kind": "opportunity",
                "filters": [{"field": "is_won", "op": "eq", "value": True}],
                "date_field": "closed",
            },
            "denominator": {
                "type": "count",
                "connector_id": 1,
                "kind": "opportunity",
                "filters": [{"field": "is_closed", "op": "eq", "value": True}],
                "date_field": "closed",
            },
        },
    },
    "nps": {
        "summary": "NPS of new customers' answers over the last 90 days",
        "value": {
            "type": "nps",
            "connector_id": 2,
            "filters": [{"field": "raw.Customer_Type__c", "op": "eq", "value": "New Customer"}],
            "window": {"type": "rolling", "days": 90},
        },
    },
    "any": {
        "summary": "Leads from referral or partners (filters combined with any)",
        "value": {
            "type": "count",
            "connector_id": 1,
            "kind": "lead",
            "match": "any",
            "filters": [
                {"field": "lead_source", "op": "in", "value": ["Referral", "Partner"]},
                {
                    "match": "all",
                    "filters": [
                        {"field": "raw.Industry", "op": "contains", "value": "Retail"},
                        {"field": "owner", "op": "is_null", "value": False},
                    ],
                },
            ],
            "window": {"type": "to_date", "unit": "quarter"},
        },
    },
}
