"""How connector secrets are stored and shown.

Secrets are write-only: the API reports which are set, never their values. At rest they
are one Fernet token per connector (AES-128-CBC + HMAC-SHA256, from `cryptography`), under
the keys of `OKR_SECRET_KEYS`: the first key encrypts, every key decrypts (`MultiFernet`),
so a new key is prepended, `okr-sync secrets rotate` re-encrypts, then the old key goes.

The stored form is an envelope whose keys start with "_", which no secrets model field can
(pydantic reserves them), so a row written before encryption existed — a plain dict of
values — is told apart and encrypted at the next start or rotation:

    {"_sealed": "fernet-v1", "_names": ["access_token"], "_token": "gAAAA..."}

The names stay readable so a connector whose keys are lost still lists with its
`secrets_set`; only its syncs and checks fail, with a message saying why.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, SecretBytes, SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from connectors.errors import ConfigError
from service.db import sqlite_path
from service.settings import Settings, secret_key_list
from service.sync.models import Connector

log = logging.getLogger(__name__)

#: Marks (and versions) the stored form; a new scheme gets a new value, read beside this one.
SEALED = "fernet-v1"
_MARK, _NAMES, _TOKEN = "_sealed", "_names", "_token"


class SecretKeyError(RuntimeError):
    """The service has no usable key to encrypt secrets with: it must not start."""


class UnreadableSecretsError(ConfigError):
    """Stored secrets no configured key decrypts (a key was removed, or is the wrong one).

    A `ConfigError`, so a sync or check fails with it as a connector misconfiguration.
    """

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the connector's stored secrets cannot be decrypted with the configured "
            "OKR_SECRET_KEYS (was a key removed or replaced?): restore the key that "
            "encrypted them, or set the connector's secrets again" + detail
        )


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


# ---------------------------------------------------------------------------- keys


def key_file_for(database_url: str) -> Path | None:
    """Where the generated key of a SQLite database lives: beside it, `<name>.key`."""
    path = sqlite_path(database_url)
    return path.with_suffix(".key") if path is not None else None


def _create_key_file(path: Path) -> bool:
    """Write a new key to `path` (mode 0600) unless it exists; whether we wrote it.

    The key is written to a private temporary file and hard-linked into place, so a second
    process starting at the same moment either wins the link or reads a complete key.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path) -> str:
    key = path.read_text().strip()
    try:
        Fernet(key)
    except ValueError:
        raise SecretKeyError(
            f"{path} does not hold a Fernet key (32 url-safe base64-encoded bytes)"
        ) from None
    return key


@lru_cache(maxsize=32)
def _keyring(keys: str | None, database_url: str) -> MultiFernet:
    if keys:
        return MultiFernet([Fernet(k) for k in secret_key_list(keys)])
    path = key_file_for(database_url)
    if path is not None:
        if _create_key_file(path):
            log.warning(
                "created %s (mode 0600), the key that encrypts connector secrets in this "
                "database: back it up with the database, without it the stored secrets "
                "cannot be decrypted (or set OKR_SECRET_KEYS instead)",
                path,
            )
        return MultiFernet([Fernet(_read_key_file(path))])
    if database_url.startswith("sqlite"):
        # An in-memory database dies with the process, and its secrets with it.
        return MultiFernet([Fernet(Fernet.generate_key())])
    raise SecretKeyError(
        "OKR_SECRET_KEYS is not set: on a server database connector secrets are encrypted "
        "with keys you provide. Make one with `okr-sync secrets new-key`, keep it in your "
        "secret store, and set OKR_SECRET_KEYS to it in every process of this deployment."
    )


def keyring(settings: Settings) -> MultiFernet:
    """The keys of `settings`: `OKR_SECRET_KEYS`, else a SQLite database's key file (made
    on first use), else `SecretKeyError`."""
    keys = settings.secret_keys.get_secret_value() if settings.secret_keys else None
    return _keyring(keys, settings.database_url)


def new_key() -> str:
    """A fresh key for `OKR_SECRET_KEYS`."""
    return Fernet.generate_key().decode()


# ---------------------------------------------------------------------------- stored form


def is_sealed(stored: Mapping[str, Any]) -> bool:
    """Whether `stored` is the encrypted form (else a legacy plain row, or empty)."""
    return _MARK in stored


def secret_names(stored: Mapping[str, Any]) -> list[str]:
    """Names of the secrets that are set, read without any key."""
    if is_sealed(stored):
        return sorted(str(n) for n in stored.get(_NAMES, []))
    return sorted(k for k, v in stored.items() if v)


def seal(secrets: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """What to store for `secrets`: encrypted with the first key (nothing set, nothing to hide)."""
    values = {k: v for k, v in secrets.items() if v is not None}
    if not values:
        return {}
    token = keyring(settings).encrypt(json.dumps(values).encode())
    return {
        _MARK: SEALED,
        _NAMES: sorted(k for k, v in values.items() if v),
        _TOKEN: token.decode(),
    }


def unseal(stored: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The secrets behind what `seal` stored (a legacy plain row reads as it is)."""
    if not is_sealed(stored):
        return dict(stored)
    if stored[_MARK] != SEALED:
        raise UnreadableSecretsError(f" (unknown stored form {stored[_MARK]!r})")
    try:
        values: dict[str, Any] = json.loads(keyring(settings).decrypt(str(stored[_TOKEN])))
    except InvalidToken:
        raise UnreadableSecretsError() from None
    return values


def known_values(stored: Mapping[str, Any], settings: Settings) -> list[Any]:
    """The secret values to redact from messages; none if they cannot be decrypted (then
    no message can contain them either, as no connector was built from them)."""
    try:
        return list(unseal(stored, settings).values())
    except UnreadableSecretsError:
        return []


def redact(text: str, secrets: Iterable[Any]) -> str:
    """`text` with every secret value (and bearer/basic credentials) replaced by ***."""
    for value in sorted((str(v) for v in secrets if v), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    text = re.sub(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", r"\1 ***", text)
    return re.sub(r"(?i)(access_token|password|client_secret)=[^&\s]+", r"\1=***", text)


# ---------------------------------------------------------------------------- re-encryption


@dataclass
class ResealReport:
    """What `reseal_stored` did, by connector."""

    #: Legacy plain rows now encrypted.
    sealed: int = 0
    #: Encrypted rows re-encrypted with the first key.
    rotated: int = 0
    #: Ids of connectors whose secrets no configured key decrypts (left as they are).
    unreadable: list[int] = field(default_factory=list)


def reseal_stored(engine: Engine, settings: Settings, *, rotate: bool) -> ResealReport:
    """Encrypt every legacy plain row; with `rotate`, also re-encrypt every encrypted row
    with the first key (idempotent: running it again changes nothing but the tokens).

    Rows are locked while rewritten (PostgreSQL), so a secret changed over the API at the
    same moment is not overwritten with the old one.
    """
    report = ResealReport()
    fernet = keyring(settings)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn, Session(bind=conn) as session:
        if sqlite:
            # Overwrite what an update frees, so the plain values replaced here do not
            # linger in free space of the file (they would in PostgreSQL's dead tuples until
            # VACUUM: see README).
            conn.exec_driver_sql("PRAGMA secure_delete=ON").close()
            conn.commit()  # so that the session's commit ends the transaction it begins
        rows = session.exec(select(Connector).order_by(col(Connector.id)).with_for_update())
        for row in rows:
            assert row.id is not None
            if not row.secrets:
                continue
            if not is_sealed(row.secrets):
                row.secrets = seal(row.secrets, settings)
                report.sealed += 1
            elif rotate:
                if row.secrets[_MARK] != SEALED:
                    report.unreadable.append(row.id)
                    continue
                try:
                    token = fernet.rotate(str(row.secrets[_TOKEN]).encode())
                except InvalidToken:
                    report.unreadable.append(row.id)
                    continue
                row.secrets = {**row.secrets, _TOKEN: token.decode()}
                report.rotated += 1
        session.commit()
        if sqlite:
            conn.exec_driver_sql("PRAGMA secure_delete=OFF").close()
            conn.commit()  # a checkpoint runs outside any transaction
            # Copy the new pages into the file and empty the WAL, which still holds the
            # replaced ones (best effort: a long reader elsewhere can postpone it).
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").close()
            conn.commit()
    return report
