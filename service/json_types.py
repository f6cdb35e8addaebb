"""Request fields take the JSON types the OpenAPI document gives them, and no other.

Pydantic's lax mode reads `0` as the date 1970-01-01 and `false` as the number 0; the
document says a date is text and a number is a number, so those are mistakes to refuse
(422 naming the field), not values to guess.
"""

from __future__ import annotations

import typing
from datetime import date, datetime

from pydantic import BaseModel, ValidationInfo


def _leaves(annotation: object) -> frozenset[type]:
    """The plain types a field's type is made of (`date | None` -> {date, NoneType})."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return frozenset({annotation})
    found: frozenset[type] = frozenset()
    for arg in typing.get_args(annotation):
        found |= _leaves(arg)
    return found


def as_documented(model: type[BaseModel], value: object, info: ValidationInfo) -> object:
    """`value`, unless its JSON type is one the field's documented type excludes."""
    field = model.model_fields.get(info.field_name or "")
    if field is None:
        return value
    leaves = _leaves(field.annotation)
    if isinstance(value, bool):
        if bool not in leaves and leaves & {int, float}:
            raise ValueError(f"{info.field_name} is a number, not true or false")
    elif isinstance(value, int | float) and not leaves & {int, float} and leaves & {date, datetime}:
        raise ValueError(f"{info.field_name} is written as ISO 8601 text, not a number")
    return value
