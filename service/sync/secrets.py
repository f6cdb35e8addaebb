"""How connector secrets are stored and shown.

Secrets are write-only: the API reports which are set, never their values. They pass
through `seal`/`unseal` on their way to and from the database, the seam where encryption
at rest (a key from settings, e.g. Fernet from `cryptography`) plugs in later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr


def plain(model: BaseModel) -> dict[str, Any]:
    """A secrets model's values, unwrapping `SecretStr` (whose dump would be masked)."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr | SecretBytes):
            value = value.get_secret_value()
        if value is not None:
            out[name] = value
    return out


def seal(secrets: Mapping[str, Any]) -> dict[str, Any]:
    """What to store for `secrets`. Today: the values as given."""
    return dict(secrets)


def unseal(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The secrets behind what `seal` stored."""
    return dict(stored)


def redact(text: str, secrets: Iterable[Any]) -> str:
    """`text` with every secret value (and bearer/basic credentials) replaced by ***."""
    for value in sorted((str(v) for v in secrets if v), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    text = re.sub(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", r"\1 ***", text)
    return re.sub(r"(?i)(access_token|password|client_secret)=[^&\s]+", r"\1=***", text)
