"""Where a connector may connect: its vendor's hosts, plus what the deployment allows.

A connector's credentials (OAuth client secret, password, bearer token, API key) go with
its requests, so a connector URL an API caller can set is a way to send them anywhere, and
to make the service probe hosts on its own network (SSRF). The policy here is applied three
times, each catching what the previous cannot:

1. when a connector's configuration is created or changed (the URL's scheme and host name,
   then every address the name resolves to), so a bad URL is a 422 naming the field;
2. before a request, on URLs that arrive at run time (Salesforce's `instance_url`);
3. when a connection is opened: the transports connect only to addresses checked here
   (`guarded_pool_classes` for urllib3, `GuardedBackend` for httpcore), so a name that
   resolves differently at run time (DNS rebinding) or a redirect to another host is
   refused before any socket is opened to it.

A host passes if it is one of the vendor's (`vendor_hosts`, exact names or `*.suffix`) or
is listed in the deployment's allowlist (host names, IP addresses or networks). Vendor
hosts need https; only allowlisted hosts may use plain http (test doubles, a local proxy).
Every resolved address must be public (not loopback, private, link-local, cloud metadata,
shared, unspecified, multicast or reserved) unless the address or the host name itself is
allowlisted.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from connectors.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: `(host, port) -> addresses`, the system resolver unless a test injects another.
Resolver = Callable[[str, int], Sequence[str]]

#: Longest piece of a vendor's answer quoted in an error message.
MAX_QUOTED_CHARS = 200


class HostNotAllowedError(ConfigError):
    """A connector URL or host is outside the policy; `field` names the config field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def is_public(address: IPAddress) -> bool:
    """Whether `address` is on the public Internet (what a vendor's host resolves to)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 reaches 127.0.0.1.
        address = address.ipv4_mapped
    # is_global alone lets through multicast and some reserved ranges in Python 3.11.
    return address.is_global and not (
        address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


@dataclass(frozen=True)
class AllowList:
    """The deployment's extra hosts: host names, and IP addresses or networks."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Entries as `OKR_CONNECTOR_ALLOWED_HOSTS` gives them; ValueError on a bad one."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = _normalise_host(entry)
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if (
                "/" in text
                or ":" in text
                or not all(
                    label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
                    for label in text.split(".")
                )
            ):
                raise ValueError(f"{entry!r} is neither a host name nor an IP address or network")
            names.add(text)
        return cls(frozenset(names), tuple(networks))

    def has_name(self, host: str) -> bool:
        """Whether the host name itself is listed."""
        return _normalise_host(host) in self.names

    def has_address(self, address: IPAddress) -> bool:
        """Whether `address` is in a listed address or network."""
        return any(address.version == net.version and address in net for net in self.networks)


def matches(host: str, patterns: Iterable[str]) -> bool:
    """Whether `host` is one of `patterns`: exact names, or `*.suffix` for any subdomain."""
    host = _normalise_host(host)
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True)
class HostPolicy:
    """The hosts one connector may reach: `vendor_hosts` plus the deployment's allowlist."""

    vendor_hosts: tuple[str, ...]
    allowed: AllowList = field(default_factory=AllowList)
    resolver: Resolver = system_resolver

    def _listed(self, host: str) -> bool:
        ip = _ip(host)
        return self.allowed.has_address(ip) if ip is not None else self.allowed.has_name(host)

    def check_host(self, host: str, *, field: str | None = None) -> None:
        """Refuse a host that is neither the vendor's nor allowlisted (no DNS lookup)."""
        if self._listed(host):
            return
        if _ip(host) is None and matches(host, self.vendor_hosts):
            return
        raise HostNotAllowedError(
            f"host {host!r} is not allowed: use the vendor's host "
            f"({', '.join(self.vendor_hosts)}) or add it to OKR_CONNECTOR_ALLOWED_HOSTS",
            field=field,
        )

    def check_url(self, url: str, *, field: str | None = None) -> tuple[str, int]:
        """Check `url`'s scheme and host name; return `(host, port)` to connect to."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise HostNotAllowedError(f"{url!r} has an invalid port", field=field) from None
        if scheme not in ("https", "http") or not host:
            raise HostNotAllowedError(
                "must be an https URL with a host (other schemes are refused)", field=field
            )
        if parts.username is not None or parts.password is not None:
            raise HostNotAllowedError("must not contain credentials", field=field)
        self.check_host(host, field=field)
        if scheme == "http" and not self._listed(host):
            raise HostNotAllowedError(
                "must use https (plain http only reaches hosts in OKR_CONNECTOR_ALLOWED_HOSTS)",
                field=field,
            )
        return host, port or (443 if scheme == "https" else 80)

    def addresses(self, host: str, port: int, *, field: str | None = None) -> list[str]:
        """The addresses `host` resolves to, all checked; raises `socket.gaierror` if none.

        One refused address refuses the host: a name answering both a public and an
        internal address would otherwise reach the internal one on some connections.
        """
        self.check_host(host, field=field)
        found = self.resolver(host, port)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        name_listed = _ip(host) is None and self.allowed.has_name(host)
        for text in found:
            address = _ip(text.split("%", 1)[0])
            if address is None:
                raise HostNotAllowedError(
                    f"host {host!r} resolves to a non-IP address", field=field
                )
            if not (name_listed or is_public(address) or self.allowed.has_address(address)):
                # The address is not quoted: which internal address a name maps to is
                # itself something an outside caller should not learn.
                raise HostNotAllowedError(
                    f"host {host!r} resolves to a loopback, private, link-local or otherwise "
                    "non-public address; add it to OKR_CONNECTOR_ALLOWED_HOSTS if intended",
                    field=field,
                )
        return list(found)

    def validate(self, url: str, *, field: str | None = None) -> None:
        """Full check of a configured URL. A name that does not resolve now is accepted:
        nothing can be sent to it, and connections check its addresses again anyway."""
        host, port = self.check_url(url, field=field)
        try:
            self.addresses(host, port, field=field)
        except (socket.gaierror, UnicodeError):
            return


def quote_vendor(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """A short, single-line, printable excerpt of a vendor's message for an error."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


# --------------------------------------------------------------------- urllib3 (requests, SDK)


def _guarded_new_conn(conn: HTTPConnection, policy: HostPolicy) -> socket.socket:
    """`HTTPConnection._new_conn`, connecting only to addresses the policy accepts.

    The socket is opened to the checked address itself, so no second resolution can
    swap it; TLS still verifies the certificate against the host name (`conn.host`).
    """
    try:
        addresses = policy.addresses(conn.host, conn.port or 443)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    error: OSError | None = None
    for address in addresses:
        try:
            return urllib3_connection.create_connection(
                (address, conn.port or 443),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from exc
        except OSError as exc:
            error = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


def guarded_pool_classes(policy: HostPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections go through `policy`, for
    `PoolManager.pool_classes_by_scheme`."""

    class _Connection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _guarded_new_conn(self, policy)

    class _TLSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _guarded_new_conn(self, policy)

    class _Pool(HTTPConnectionPool):
        ConnectionCls = _Connection

    class _TLSPool(HTTPSConnectionPool):
        ConnectionCls = _TLSConnection

    return {"http": _Pool, "https": _TLSPool}


# --------------------------------------------------------------------- httpcore (httpx)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, connecting only to addresses the policy accepts."""

    def __init__(self, policy: HostPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._policy.addresses(host, port)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002 - refused whatever it is
        timeout: float | None = None,  # noqa: ARG002
        socket_options: Iterable[Any] | None = None,  # noqa: ARG002
    ) -> httpcore.NetworkStream:
        raise HostNotAllowedError("connectors do not connect to Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)
