"""The screen's listening socket: the one clear line when the address is taken, and TCP that does not wait."""

from __future__ import annotations

import socket

import pytest

from kcc.config import WebConfig
from kcc.errors import ConfigurationError
from kcc.web.server import bind


def test_the_socket_says_it_is_tcp_so_asyncio_turns_nagle_off() -> None:
    sock = bind(WebConfig(listen="127.0.0.1:0"))
    try:
        assert sock.proto == socket.IPPROTO_TCP, "asyncio would leave Nagle on: ~40 ms on every kept-alive request"
    finally:
        sock.close()


def test_an_address_in_use_stops_the_start_with_what_to_change() -> None:
    taken = bind(WebConfig(listen="127.0.0.1:0"))
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=rf"cannot listen on 127.0.0.1:{port} .*set another web.listen"):
            bind(WebConfig(listen=f"127.0.0.1:{port}"))
    finally:
        taken.close()
