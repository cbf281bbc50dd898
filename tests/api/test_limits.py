"""A body over the limit is answered 413 with a JSON error by a real uvicorn server, decided from its
Content-Length, and the client reads that answer instead of a broken pipe."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import Server, cli, service_env
from tests.service_setup import fake_store_entry

TEN_MB = b'{"model": "' + b"a" * (10 * 1024 * 1024) + b'"}'
REFUSED = {"detail": "request body larger than 1048576 bytes"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("limits")
    fake_store_entry(tmp / "home")
    env = service_env(tmp, tmp / "home")
    key = cli(env, "keys", "create", "--name", "limits").stdout.strip()
    srv = Server(env, tmp / "serve.log", "--no-workers")
    yield srv, key
    srv.stop()


def _raw_post(srv: Server, key: str, headers: str, body: Iterator[bytes]) -> tuple[str, dict, bytes]:
    """Send the whole request the way a plain HTTP/1.1 client does, then read the answer."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\n{headers}\r\n".encode())
        for chunk in body:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, content = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}, content


def _length(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    return next((int(h.split(":")[1]) for h in head.split("\r\n") if h.startswith("content-length:")), 0)


def _chunks(data: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_ten_megabytes_by_content_length_get_a_json_413(server: tuple[Server, str]) -> None:
    srv, key = server
    status, headers, content = _raw_post(srv, key, f"Content-Length: {len(TEN_MB)}\r\n", _chunks(TEN_MB))
    assert status.startswith("HTTP/1.1 413")
    assert headers["content-type"] == "application/json" and json.loads(content) == REFUSED
    r = httpx.post(f"{srv.url}/v1/jobs", content=TEN_MB, timeout=30,
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json() == REFUSED


def test_expect_100_continue_is_refused_before_the_body_is_sent(server: tuple[Server, str]) -> None:
    srv, key = server
    status, _, content = _raw_post(srv, key, f"Content-Length: {len(TEN_MB)}\r\nExpect: 100-continue\r\n", iter(()))
    assert status.startswith("HTTP/1.1 413") and json.loads(content) == REFUSED


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(server: tuple[Server, str]) -> None:
    srv, key = server
    chunked = (b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(TEN_MB))
    status, _, content = _raw_post(srv, key, "Transfer-Encoding: chunked\r\n", (*chunked, b"0\r\n\r\n"))
    assert status.startswith("HTTP/1.1 413") and json.loads(content) == REFUSED


def test_a_body_under_the_limit_still_reaches_the_route(server: tuple[Server, str]) -> None:
    srv, key = server
    r = httpx.post(f"{srv.url}/v1/jobs", json={"model": "smollm2-135m", "recipe": "w4a16-rtn"},
                   headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 202 and r.json()["spec"]["recipe"]["name"] == "w4a16-rtn"
