"""Serve an ASGI app (a fake vendor API) on a loopback port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trustme
import uvicorn
from starlette.types import ASGIApp

#: What the suite adds to the connectors' host allowlist (`OKR_CONNECTOR_ALLOWED_HOSTS`,
#: `Runtime.allowed_hosts`): the loopback address every fake is served on.
ALLOWED_HOSTS = ("127.0.0.1",)


@dataclass(frozen=True)
class Served:
    """A running fake: its base URL and, for TLS, the CA bundle path that trusts it."""

    base_url: str
    host: str
    port: int
    ca_bundle: str | None


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a port the kernel picks, already listening.

    It is handed to uvicorn as is, so the port is never released between being chosen and
    being served (binding a probe socket, closing it and letting uvicorn bind the same
    number again lets another process take the port in between).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def serve(app: ASGIApp, *, tls: bool = False, tmp_dir: str | None = None) -> Iterator[Served]:
    """Run `app` with uvicorn on 127.0.0.1 until the block exits.

    With `tls=True` a throwaway CA (trustme) signs a certificate for 127.0.0.1/localhost,
    and `Served.ca_bundle` is the CA's PEM file: the client under test must trust it through
    its own CA-bundle setting, exactly as a company behind an inspecting proxy would.
    """
    import os
    import tempfile

    kwargs: dict[str, object] = {}
    ca_path: str | None = None
    folder = tmp_dir or tempfile.mkdtemp(prefix="okr-fake-")
    if tls:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca_path = os.path.join(folder, "ca.pem")
        key_path = os.path.join(folder, "server.pem")
        ca.cert_pem.write_to_path(ca_path)
        cert.private_key_and_cert_chain_pem.write_to_path(key_path)
        kwargs = {"ssl_certfile": key_path, "ssl_keyfile": key_path}
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        **kwargs,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    sock = listening_socket()
    port = int(sock.getsockname()[1])
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        scheme = "https" if tls else "http"
        yield Served(f"{scheme}://127.0.0.1:{port}", "127.0.0.1", port, ca_path)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
