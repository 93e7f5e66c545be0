"""cofferd as a server: HTTP details, limits, TLS, signals, logs, configuration errors."""
import hashlib
import os
import select
import signal
import socket
import ssl
import subprocess
import time

import pytest
import requests

from conftest import start_cofferd_config

ROOT = {"X-Vault-Token": "root"}


def wait_for(predicate, what, seconds=20):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_headers_methods_and_tokens(cofferd_dev):
    a = cofferd_dev.addr + "/v1/"
    r = requests.put(a + "secret/data/http/x", json={"data": {"k": "v"}}, headers=ROOT)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"  # exactly: hvac reads errors only then
    assert r.headers["Cache-Control"] == "no-store"
    assert r.content.endswith(b"}\n")

    r = requests.delete(a + "secret/data/http/x", headers=ROOT)
    assert r.status_code == 204 and r.content == b""

    r = requests.head(a + "sys/health")
    assert r.status_code == 200 and r.content == b""
    assert requests.head(a + "sys/mounts", headers=ROOT).status_code == 405

    r = requests.request("LIST", a + "secret/metadata/http", headers=ROOT)
    assert r.status_code == 200 and r.json()["data"]["keys"] == ["x"]
    r = requests.get(a + "secret/metadata/http?list=true", headers=ROOT)
    assert r.json()["data"]["keys"] == ["x"]

    assert requests.get(a + "sys/mounts", headers={"Authorization": "Bearer root"}).status_code == 200
    assert requests.get(a + "sys/mounts", headers={"Authorization": "bearer root"}).status_code == 403
    assert requests.get(a + "sys/mounts", headers={"X-Vault-Token": "root", "Authorization": "Bearer nope"}).ok
    r = requests.get(a + "sys/mounts", headers={**ROOT, "X-Vault-Request": "true", "X-Vault-Namespace": "root"})
    assert r.status_code == 200
    r = requests.get(a + "sys/mounts", headers={**ROOT, "X-Vault-Namespace": "team-a"})
    assert r.status_code == 404 and r.json() == {"errors": ["namespace not found"]}

    r = requests.request("FOO", a + "sys/mounts", headers=ROOT)
    assert r.status_code == 405 and "errors" in r.json()
    r = requests.get(cofferd_dev.addr + "/v2/sys/mounts", headers=ROOT)
    assert r.status_code == 404 and r.json() == {"errors": []}
    r = requests.post(a + "secret/data/http/x", data=b"{not json", headers=ROOT)
    assert r.status_code == 400 and r.json()["errors"]
    r = requests.get(a + "sys/mounts", headers={**ROOT, "X-Vault-Wrap-TTL": "5m"})
    assert r.status_code == 200 and r.json()["wrap_info"]["ttl"] == 300 and r.json()["data"] is None
    r = requests.get(a + "sys/mounts", headers={**ROOT, "X-Vault-Wrap-TTL": "abc"})
    assert r.status_code == 400 and "error parsing X-Vault-Wrap-TTL header" in r.json()["errors"][0]


def test_pipelined_requests_with_list_on_one_connection(cofferd_dev):
    # LIST is not a method NIO's parser knows; cofferd carries it through, also when requests are
    # pipelined and split at odd places.
    host, port = cofferd_dev.hostport.split(":")
    body = b'{"data":{"note":"LIST / HTTP/1.1"}}'
    data = (b"PUT /v1/secret/data/pipe/a HTTP/1.1\r\nHost: x\r\nX-Vault-Token: root\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            + b"LIST /v1/secret/metadata/pipe HTTP/1.1\r\nHost: x\r\nX-Vault-Token: root\r\n\r\n"
            + b"GET /v1/secret/data/pipe/a HTTP/1.1\r\nHost: x\r\nX-Vault-Token: root\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        for i in range(0, len(data), 7):
            s.sendall(data[i:i + 7])
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 3
    assert b'"keys":["a"]' in received and b'"note":"LIST / HTTP/1.1"' in received


def test_request_size_cap(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address          = "{addr}"
  tls_disable      = true
  max_request_size = 2048
}}
""", workdir)
    try:
        a = server.addr + "/v1/sys/init"
        r = requests.put(a, json={"secret_shares": 1, "secret_threshold": 1, "pad": "x" * 4096})
        assert r.status_code == 413 and r.json() == {"errors": ["http: request body too large"]}
        r = requests.put(a, data=(b"x" * 1000 for _ in range(4)))  # chunked, no Content-Length
        assert r.status_code == 413
        r = requests.put(a, json={"secret_shares": 1, "secret_threshold": 1})
        assert r.status_code == 200 and r.json()["root_token"]
        # On one connection: exactly one answer (413), then the end of the connection.
        host, port = server.hostport.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"PUT /v1/sys/init HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 1000)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 413 ") and received.count(b"HTTP/1.1") == 1, received
    finally:
        server.stop()


def test_slow_request_heads_are_cut_off(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address                  = "{addr}"
  tls_disable              = true
  http_read_header_timeout = "1s"
}}
""", workdir)
    try:
        host, port = server.hostport.split(":")
        with socket.create_connection((host, int(port)), timeout=15) as s:
            s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            try:
                closed = s.recv(1024) == b""
            except ConnectionResetError:
                closed = True
            assert closed, "the server closed the connection of a client that never finished its request head"
    finally:
        server.stop()


def closed_within(sock, seconds, trickle=None):
    """Seconds until the server closed `sock` (None if it did not within `seconds`), sending `trickle`
    every 0.25 s meanwhile."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if trickle is not None:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
        readable, _, _ = select.select([sock], [], [], 0.25)
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data == b"":
                return time.monotonic() - started
    return None


def test_slow_request_bodies_are_cut_off_at_http_read_timeout(cofferd_bin, workdir):
    # Each byte of the body resets an idle timer, and the head timer stopped when the head was
    # complete: only a deadline for the whole request ends this (Vault's http_read_timeout).
    server = start_cofferd_config(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address                  = "{addr}"
  tls_disable              = true
  http_read_header_timeout = "1s"
  http_read_timeout        = "2s"
  http_idle_timeout        = "60s"
}}
""", workdir)
    try:
        host, port = server.hostport.split(":")
        with socket.create_connection((host, int(port)), timeout=15) as slow:
            slow.sendall(b"PUT /v1/sys/init HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            closed = closed_within(slow, 10, trickle=b" ")  # a byte every 0.25 s: 1000 bytes would take 250 s
            assert closed is not None, "a client sending its body a byte at a time held the connection for 10 s"
            assert 1.5 <= closed <= 4, f"closed after {closed:.2f} s; http_read_timeout is 2 s"
        # The same deadline for a request that is not the first on its connection: it starts at the
        # request's first byte, not at the connection's start.
        with socket.create_connection((host, int(port)), timeout=15) as s:
            s.sendall(b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
            time.sleep(2.5)  # idle between requests is not part of a request's deadline
            s.sendall(b"PUT /v1/sys/init HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            closed = closed_within(s, 10, trickle=b" ")
            assert closed is not None and 1.5 <= closed <= 4, closed
        # Everyone else is served meanwhile and after.
        assert requests.get(server.addr + "/v1/sys/seal-status", timeout=5).status_code == 200
    finally:
        server.stop()


def ask(sock):
    """Sends a keep-alive request on `sock` and reads its whole response ("" when the server closed)."""
    try:
        sock.sendall(b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return ""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")][0].split(b":")[1])
        while len(body) < length:
            body += sock.recv(65536)
        return head.split(b"\r\n")[0].decode()
    except (ConnectionResetError, BrokenPipeError):
        return ""


def test_connections_per_client_address_are_limited(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, """
storage "memory" {{}}
listener "tcp" {{
  address                     = "{addr}"
  tls_disable                 = true
  max_connections_per_address = 3
}}
""", workdir)
    host, port = server.hostport.split(":")
    held = []

    def connect(source="127.0.0.1"):
        s = socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0))
        held.append(s)
        return s

    try:
        # Three connections from 127.0.0.1, each served and kept open (the start-up probe's own
        # connection may take a moment to be counted as closed).
        deadline = time.monotonic() + 10
        while len(held) < 3:
            s = connect()
            if ask(s) != "HTTP/1.1 200 OK":
                held.remove(s)
                s.close()
                assert time.monotonic() < deadline, "could not open 3 connections under a limit of 3"
                time.sleep(0.1)
        # The fourth from the same address is closed at once, unanswered ...
        fourth = connect()
        assert ask(fourth) == "", "a fourth connection from one address was served with a limit of 3"
        assert closed_within(fourth, 2) is not None
        # ... while another address is served, and the three held ones still are.
        assert ask(connect("127.0.0.2")) == "HTTP/1.1 200 OK"
        for s in held[:3]:
            assert ask(s) == "HTTP/1.1 200 OK"
        # Closing one frees a slot for the address.
        held.pop(0).close()
        deadline = time.monotonic() + 5
        while ask(connect()) != "HTTP/1.1 200 OK":
            assert time.monotonic() < deadline, "a slot freed by a close was not given back"
            time.sleep(0.1)
        wait_for(lambda: "refused connections from a client at max_connections_per_address" in server.output(),
                 "the refusal to be logged")
        assert "client=127.0.0.1" in server.output()
    finally:
        for s in held:
            s.close()
        server.stop()


def make_cert(directory, name):
    cert, key = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def served_cert_fingerprint(hostport):
    host, port = hostport.split(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def fingerprint(pem_path):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(pem_path).read())).hexdigest()


def test_tls_and_sighup_reloads_certificate_and_log_level(cofferd_bin, workdir):
    cert, key = make_cert(workdir, "first")
    config = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address       = "{addr}"
  tls_cert_file = "{dir}/live.crt"
  tls_key_file  = "{dir}/live.key"
}}
log_level = "info"
"""
    os.rename(cert, f"{workdir}/live.crt")
    os.rename(key, f"{workdir}/live.key")
    server = start_cofferd_config(cofferd_bin, config, workdir, scheme="https", verify=f"{workdir}/live.crt")
    try:
        a = server.addr + "/v1/"
        first = fingerprint(f"{workdir}/live.crt")
        init = requests.put(a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1},
                            verify=f"{workdir}/live.crt").json()
        assert served_cert_fingerprint(server.hostport) == first

        # A bad pair is refused and the old one stays in use.
        with open(f"{workdir}/live.key", "w") as f:
            f.write("not a key\n")
        server.signal(signal.SIGHUP)
        wait_for(lambda: "TLS certificate not reloaded" in server.output(), "the refused reload to be logged")
        assert served_cert_fingerprint(server.hostport) == first

        # A new pair and a new log level are picked up without a restart.
        cert, key = make_cert(workdir, "second")
        os.replace(key, f"{workdir}/live.key")
        os.replace(cert, f"{workdir}/live.crt")
        with open(f"{workdir}/coffer.hcl") as f:
            text = f.read().replace('log_level = "info"', 'log_level = "debug"')
        with open(f"{workdir}/coffer.hcl", "w") as f:
            f.write(text)
        server.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded the TLS certificate" in server.output(), "the reload to be logged")
        assert served_cert_fingerprint(server.hostport) == fingerprint(f"{workdir}/live.crt") != first

        r = requests.put(a + "sys/unseal", json={"key": init["keys"][0]}, verify=f"{workdir}/live.crt")
        assert r.json()["sealed"] is False
        wait_for(lambda: "path=/v1/sys/unseal" in server.output(), "a debug line for the request")
        log = server.output()
        assert init["root_token"] not in log and init["keys"][0] not in log and init["keys_base64"][0] not in log
    finally:
        server.stop()


SQLITE_TRACE = """
storage "sqlite" {{ path = "{dir}/coffer.db" }}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
log_level = "trace"
"""


def test_sigterm_finishes_the_request_in_flight_and_closes_storage(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, SQLITE_TRACE, workdir)
    a = server.addr + "/v1/"
    init = requests.put(a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
    requests.put(a + "sys/unseal", json={"key": init["keys"][0]})
    token = init["root_token"]
    requests.post(a + "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}}, headers={"X-Vault-Token": token})

    host, port = server.hostport.split(":")
    body = b'{"data":{"password":"in-flight-secret-value"}}'
    head = (f"PUT /v1/secret/data/last HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(head + body[:10])  # the request is in flight ...
        time.sleep(0.3)
        server.signal(signal.SIGTERM)  # ... when the server is told to stop
        time.sleep(0.3)
        s.sendall(body[10:])
        response = s.recv(65536)
    assert response.startswith(b"HTTP/1.1 200 OK"), response
    assert server.proc.wait(timeout=15) == 0
    log = server.output()
    assert "storage closed" in log
    assert token not in log and "in-flight-secret-value" not in log

    # Everything written, the last request included, is there after a restart.
    server = start_cofferd_config(cofferd_bin, SQLITE_TRACE, workdir, addr=server.hostport)
    try:
        requests.put(server.addr + "/v1/sys/unseal", json={"key": init["keys"][0]})
        r = requests.get(server.addr + "/v1/secret/data/last", headers={"X-Vault-Token": token})
        assert r.json()["data"]["data"] == {"password": "in-flight-secret-value"}
    finally:
        server.stop()


@pytest.mark.parametrize("text, message", [
    ('storage "sqlite" {\n  path = "/tmp/x.db"\n  cache = true\n}\n', 'line 3: unknown key "cache" in storage "sqlite"'),
    ('listener "tcp" {\n  address = "127.0.0.1:1"\n}\nui = true\n', 'line 4: unknown key "ui" in the configuration'),
    ('listener "tcp" {\n  tls_disable = true\n}\nseal "pkcs11" {\n  lib = "/usr/lib/softhsm/libsofthsm2.so"\n}\n',
     'seal "pkcs11": the pkcs11 seal needs key_label or key_id'),
    ('listener "tcp" {\n  tls_disable = true\n}\nseal "pkcs11" {\n  lib = "/x.so"\n  pinn = "1"\n}\n',
     "unknown pkcs11 seal field 'pinn'"),
    ('storage "sqlite" {\n  path = \n}\n', "line 3: expected a value"),
    ('listener "tcp" {\n  address = "127.0.0.1:8200"\n}\n', "needs tls_cert_file and tls_key_file"),
    ('listener "tcp" {\n  tls_disable = true\n  tls_min_version = "tls1.3"\n}\n',
     'line 3: "tls_min_version" must be one of "tls10", "tls11", "tls12", "tls13"'),
    ('listener "tcp" {\n  tls_disable = true\n  tls_cipher_suites = "TLS_RSA_WITH_3DES_EDE_CBC_SHA"\n}\n',
     "line 3: tls_cipher_suites: \"TLS_RSA_WITH_3DES_EDE_CBC_SHA\" is not offered"),
    ('listener "tcp" {\n  tls_disable = true\n  tls_require_and_verify_client_cert = true\n}\n',
     "line 3: tls_require_and_verify_client_cert = true needs tls_client_ca_file"),
    ('listener "tcp" {\n  tls_disable = true\n  http_read_timeout = "never"\n}\n',
     'line 3: "http_read_timeout" must be a duration'),
])
def test_configuration_errors_name_the_line(cofferd_bin, workdir, text, message):
    path = os.path.join(workdir, "bad.hcl")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([cofferd_bin, f"-config={path}"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and message in p.stderr, p.stderr
