"""The loopback server the vendor fakes run on."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.fakes.server import serve


async def hello(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", hello)])


def test_given_serve_when_started_then_it_binds_one_socket_on_port_0_and_serves_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound: list[Any] = []
    real_bind = socket.socket.bind

    def recording_bind(sock: socket.socket, address: Any) -> None:
        bound.append(address)
        real_bind(sock, address)

    monkeypatch.setattr(socket.socket, "bind", recording_bind)
    with serve(APP) as served:
        # The only bind is the kernel-picked port: uvicorn got that socket, it did not
        # bind the number again (the old probe-then-rebind race).
        assert bound == [("127.0.0.1", 0)]
        assert served.port != 0
        answer = httpx.get(f"{served.base_url}/", timeout=5)
        assert (answer.status_code, answer.text) == (200, "hello")


def test_given_two_servers_when_running_together_then_each_answers_on_its_own_port(
    tmp_path: Path,
) -> None:
    with serve(APP) as plain, serve(APP, tls=True, tmp_dir=str(tmp_path)) as tls:
        assert plain.port != tls.port
        assert httpx.get(f"{plain.base_url}/", timeout=5).text == "hello"
        assert tls.ca_bundle is not None
        trusting = ssl.create_default_context(cafile=tls.ca_bundle)
        assert httpx.get(f"{tls.base_url}/", verify=trusting, timeout=5).text == "hello"
