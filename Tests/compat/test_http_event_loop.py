"""cofferd answers reads on NIO's event loop and sends writes to a thread pool (WireHandler.swift):
answers stay in request order on a connection, and a write that waits does not hold up reads."""
import json
import os
import signal
import socket
import sqlite3
import threading
import time

import pytest
import requests
from websockets.sync.client import connect

from conftest import start_cofferd_config, start_cofferd_dev

SQLITE = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
"""


@pytest.fixture
def sqlite_server(cofferd_bin, workdir):
    """An initialised, unsealed cofferd on SQLite (so its writes go to the thread pool), with KV v2 at secret/."""
    server = start_cofferd_config(cofferd_bin, SQLITE, workdir)
    try:
        a = server.addr + "/v1/"
        init = requests.put(a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        requests.put(a + "sys/unseal", json={"key": init["keys"][0]}).raise_for_status()
        server.token = init["root_token"]
        server.db = os.path.join(workdir, "coffer.db")
        r = requests.post(a + "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}},
                          headers={"X-Vault-Token": server.token})
        assert r.status_code == 204, r.text
        yield server
    finally:
        server.stop()


def read_response(sock, buffer):
    """One response (status, body bytes) from `sock`; `buffer` holds bytes read past earlier ones."""
    while b"\r\n\r\n" not in buffer[0]:
        chunk = sock.recv(65536)
        assert chunk, f"the connection ended before a response; got {buffer[0]!r}"
        buffer[0] += chunk
    head, _, rest = buffer[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection ended inside a response body"
        rest += chunk
    buffer[0] = rest[length:]
    return status, rest[:length]


def request(method, path, token, body=None, close=False):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\n"
    if data:
        head += f"Content-Length: {len(data)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + data


def pipelined_writes_and_reads(server, token):
    # Writes (thread pool on SQLite) and reads (event loop) alternate in one burst: each read must
    # see the write sent before it, and the answers come back in the order asked.
    steps = []
    for i in range(8):
        steps.append(("PUT", "/v1/secret/data/order/x", {"data": {"n": i}}, 200, None))
        steps.append(("GET", "/v1/secret/data/order/x", None, 200, i))
    steps.append(("LIST", "/v1/secret/metadata/order", None, 200, None))
    steps.append(("GET", "/v1/secret/data/order/missing", None, 404, None))
    steps.append(("GET", "/v1/secret/data/order/x", None, 200, 7))
    data = b"".join(request(m, p, token, b, close=(k == len(steps) - 1)) for k, (m, p, b, _, _) in enumerate(steps))
    host, port = server.hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(data)  # all at once: pipelined
        buffer = [b""]
        for method, path, _, status, n in steps:
            got, body = read_response(s, buffer)
            assert got == status, (method, path, got, body)
            if n is not None:
                assert json.loads(body)["data"]["data"] == {"n": n}, (method, path, body)
            if method == "PUT":
                assert json.loads(body)["data"]["version"] >= 1
        assert s.recv(65536) == b"" and buffer[0] == b"", "more than one answer a request"


def test_pipelined_requests_are_answered_in_order_sqlite(sqlite_server):
    pipelined_writes_and_reads(sqlite_server, sqlite_server.token)


def test_pipelined_requests_are_answered_in_order_memory(cofferd_dev):
    pipelined_writes_and_reads(cofferd_dev, "root")


def test_writes_and_reads_interleaved_on_one_keep_alive_connection(sqlite_server):
    a = sqlite_server.addr + "/v1/secret/data/interleaved"
    headers = {"X-Vault-Token": sqlite_server.token}
    with requests.Session() as session:
        for i in range(30):
            r = session.put(a, json={"data": {"n": i}}, headers=headers)
            assert r.status_code == 200 and r.json()["data"]["version"] == i + 1
            r = session.get(a, headers=headers)
            assert r.status_code == 200 and r.json()["data"]["data"] == {"n": i}
        r = session.delete(a, headers=headers)
        assert r.status_code == 204
        assert session.get(a, headers=headers).status_code == 404


def test_a_write_that_waits_does_not_hold_up_reads(sqlite_server):
    a = sqlite_server.addr + "/v1/"
    headers = {"X-Vault-Token": sqlite_server.token}
    assert requests.put(a + "secret/data/slow/read", json={"data": {"k": "v"}}, headers=headers).status_code == 200
    assert requests.get(a + "secret/data/slow/read", headers=headers).status_code == 200  # now cached

    # Another process holds SQLite's write lock: cofferd's next write waits for it (busy timeout 5 s).
    lock = sqlite3.connect(sqlite_server.db, timeout=10, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    held_since = time.monotonic()
    write = {}

    def slow_write():
        r = requests.put(a + "secret/data/slow/write", json={"data": {"k": "w"}}, headers=headers, timeout=30)
        write["status"], write["at"] = r.status_code, time.monotonic()

    writer = threading.Thread(target=slow_write)
    try:
        writer.start()
        time.sleep(0.3)  # the write is on the thread pool, waiting for the lock
        assert "status" not in write, "the write did not wait for SQLite's lock; the test proves nothing"
        # Reads on fresh connections (NIO's event loops take them in turn, so both loops) are answered.
        for _ in range(6):
            started = time.monotonic()
            r = requests.get(a + "secret/data/slow/read", headers=headers, timeout=10)
            assert r.status_code == 200 and r.json()["data"]["data"] == {"k": "v"}
            assert time.monotonic() - started < 1.0
        assert "status" not in write, "the write finished while the lock was held"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        writer.join(timeout=30)
    assert write.get("status") == 200 and write["at"] - held_since >= 0.3
    r = requests.get(a + "secret/data/slow/write", headers=headers)
    assert r.status_code == 200 and r.json()["data"]["data"] == {"k": "w"}


TIMEOUTS = """
storage "memory" {{}}
listener "tcp" {{
  address                  = "{addr}"
  tls_disable              = true
  http_read_header_timeout = "1s"
  http_read_timeout        = "2s"
  http_idle_timeout        = "1s"
}}
"""


def closed(sock, seconds):
    """Whether the server closed `sock` within `seconds` (without sending anything more)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_deadlines_follow_each_request_on_a_keep_alive_connection(cofferd_bin, workdir):
    # The header, read and idle deadlines are kept per request without a timer each: a connection
    # that keeps asking, each request well within the limits, stays open past all three ...
    server = start_cofferd_config(cofferd_bin, TIMEOUTS, workdir)
    try:
        host, port = server.hostport.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            buffer = [b""]
            started = time.monotonic()
            while time.monotonic() - started < 4.5:
                s.sendall(b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n")
                time.sleep(0.3)  # a head sent in two parts, within the header timeout
                s.sendall(b"\r\n")
                status, _ = read_response(s, buffer)
                assert status == 200
                idle_from = time.monotonic()
                time.sleep(0.5)  # idle, within the idle timeout
            # ... and is closed once it stays idle past http_idle_timeout.
            assert closed(s, 5), "an idle keep-alive connection was not closed"
            assert 0.8 < time.monotonic() - idle_from < 3
    finally:
        server.stop()
    # A later request whose head never ends is cut off by the header timeout, counted from its first
    # byte (the idle timeout is long here, so that it is not what closes the connection).
    server = start_cofferd_config(cofferd_bin, TIMEOUTS.replace('"1s"\n}', '"60s"\n}'), workdir)
    try:
        host, port = server.hostport.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            buffer = [b""]
            s.sendall(b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s, buffer)[0] == 200
            time.sleep(2.5)  # past every deadline of the first request
            s.sendall(b"GET /v1/sys/seal-status HTTP/1.1\r\n")
            head_from = time.monotonic()
            assert closed(s, 5), "a request head that never ended was not cut off"
            assert 0.8 < time.monotonic() - head_from < 3
    finally:
        server.stop()


def test_sigterm_ends_idle_and_events_connections_and_the_server_exits(cofferd_bin):
    # Graceful shutdown closes a keep-alive connection between requests and an events WebSocket
    # (which has no request under way), so the server exits instead of waiting for its clients.
    server = start_cofferd_dev(cofferd_bin)
    try:
        host, port = server.hostport.split(":")
        idle = socket.create_connection((host, int(port)), timeout=10)
        idle.sendall(b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(idle, [b""])[0] == 200
        with connect(f"ws://{server.hostport}/v1/sys/events/subscribe/kv*?json=true",
                     additional_headers={"X-Vault-Token": "root"}):
            server.signal(signal.SIGTERM)
            assert server.proc.wait(timeout=10) == 0
        assert closed(idle, 5)
        assert "storage closed" in server.output()
        idle.close()
    finally:
        server.stop()
