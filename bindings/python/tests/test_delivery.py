"""The remote client from Python over the C ABI (docs/delivery.md), against real processes: a cofferd
started here (cache, kill -9, fallback to the env file, degraded flag and event, recovery; AppRole login
and renewal) and a small WebSocket server of Python's `websockets` standing in for the event endpoint
(invalidation). cofferd comes from $COFFERD (the Makefile passes the one `swift build` made)."""

import asyncio
import json
import os
import shutil
import signal
import ssl
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

import coffer


def _cofferd():
    path = os.environ.get("COFFERD")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"$COFFERD must name the cofferd binary (swift build --product cofferd); got {path!r}",
                    pytrace=False)
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(addr, method, path, body=None, token=None, context=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{addr}/v1/{path}", data=data, method=method)
    if token:
        request.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, (json.loads(text) if text else None)


def _wait_for(condition, what, timeout=15.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Cofferd:
    """cofferd on a SQLite file in `directory`, listening on `port` (plain HTTP on loopback)."""

    def __init__(self, directory, port):
        self.directory, self.port = directory, port
        self.addr = f"http://127.0.0.1:{port}"
        self.config = os.path.join(directory, "coffer.hcl")
        with open(self.config, "w") as f:
            f.write(f'storage "sqlite" {{ path = "{directory}/coffer.db" }}\n'
                    f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n')
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.directory, "cofferd.log"), "ab")
        self.proc = subprocess.Popen([_cofferd(), f"-config={self.config}"], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"cofferd exited with {self.proc.returncode}")
            try:
                return _call(self.addr, "GET", "sys/seal-status")[0] == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        _wait_for(listening, "cofferd to listen", timeout=60, interval=0.05)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


@pytest.fixture
def cofferd():
    directory = tempfile.mkdtemp(prefix="coffer-delivery-")
    server = Cofferd(directory, _free_port())
    server.start()
    status, init = _call(server.addr, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
    assert status == 200
    server.key, server.root = init["keys"][0], init["root_token"]
    assert _call(server.addr, "PUT", "sys/unseal", {"key": server.key})[1]["sealed"] is False
    assert _call(server.addr, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}},
                 server.root)[0] == 204
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _counter(client, name, **labels):
    metrics = json.loads(client.metrics())
    for counter in metrics["Counters"]:
        if counter["Name"] == name and all(counter["Labels"].get(k) == v for k, v in labels.items()):
            return counter["Count"]
    raise AssertionError(f"no counter {name} {labels} in {metrics}")


def _gauge(client, name):
    return next(g["Value"] for g in json.loads(client.metrics())["Gauges"] if g["Name"] == name)


def test_cache_then_kill_then_env_file_then_recovery(cofferd, tmp_path):
    store = {"password": "from-store-s3cret", "user": "svc"}
    assert _call(cofferd.addr, "POST", "secret/data/app", {"data": store}, cofferd.root)[0] == 200
    env_file = tmp_path / ".env"
    env_file.write_text("# the fallback of secret/data/app\nAPP_PASSWORD=from-env-file\nexport APP_USER='svc-file'\n")

    with coffer.connect(cofferd.addr, token=cofferd.root, cache_ttl=1.0, max_stale=1.0, env_file=str(env_file),
                        environment=False, retry={"attempts": 2, "initial_backoff": 0.01, "max_backoff": 0.02},
                        timeout=2) as client:
        first = client.read("app")
        assert first == coffer.SecretRead(store, 1, "store", False)
        second = client.read("app")
        assert second == coffer.SecretRead(store, 1, "cache", False)
        assert _counter(client, "coffer.client.cache.hits") == 1
        assert _counter(client, "coffer.client.cache.misses") == 1

        cofferd.kill()
        seen = []

        def served_by_env_file():
            read = client.read("app")
            seen.append((read.source, read.degraded, read.fields))
            return read.source == "env_file"

        _wait_for(served_by_env_file, "a read from the env file after the TTL and max stale")
        # Within the TTL the fresh entry; after it, the stale entry flagged degraded; then the env file.
        assert ("cache", True, store) in seen, seen
        assert seen[-1] == ("env_file", True, {"password": "from-env-file", "user": "svc-file"})
        assert [s for s, _, _ in seen] == sorted([s for s, _, _ in seen], key=["cache", "env_file"].index), seen
        assert client.degraded is True and client.last_source == "env_file"
        events = client.events()
        assert [e["event_type"] for e in events] == ["client/degraded"]
        assert "s3cret" not in json.dumps(events) and cofferd.root not in json.dumps(events)
        assert _counter(client, "coffer.client.fallbacks", source="cache") >= 1
        assert _counter(client, "coffer.client.fallbacks", source="env_file") >= 1
        assert _gauge(client, "coffer.client.degraded") == 1
        assert "coffer_client_degraded 1" in client.metrics("prometheus")

        # The same data directory, unsealed again: the store answers and the flag clears.
        cofferd.start()
        assert _call(cofferd.addr, "PUT", "sys/unseal", {"key": cofferd.key})[1]["sealed"] is False
        recovered = _wait_for(lambda: (lambda r: r if r.source == "store" else None)(client.read("app")),
                              "a read from the store after the restart")
        assert recovered == coffer.SecretRead(store, 1, "store", False)
        assert client.degraded is False
        assert [e["event_type"] for e in client.events()] == ["client/degraded", "client/recovered"]
        assert [e["event_type"] for e in client.events(after=events[0]["id"])] == ["client/recovered"]
        assert _gauge(client, "coffer.client.degraded") == 0


def _connections_to(port):
    """This process's established TCP connections to 127.0.0.1:`port`, from /proc."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if row[3] == "01" and row[9] in inodes and int(row[2].split(":")[1], 16) == port)


def test_requests_reuse_a_kept_connection_and_a_forked_child_makes_its_own(cofferd):
    """The client keeps its connection to the store between requests (no connect per request). A child
    forked while the client is open (a pre-fork server's worker) makes connections of its own: on the
    parent's socket, each process could read the other's answers."""
    for path, data in (("parent", {"v": "p"}), ("child", {"v": "c"})):
        assert _call(cofferd.addr, "POST", f"secret/data/{path}", {"data": data}, cofferd.root)[0] == 200
    # Without the event subscription's WebSocket (and its thread), so the one connection counted is the
    # requests' and the child is forked from a process with no other thread of the client's.
    with coffer.connect(cofferd.addr, token=cofferd.root, environment=False, cache={"events": False}) as client:
        for _ in range(20):
            assert client.request("GET", "secret/data/parent").body["data"]["data"] == {"v": "p"}
        assert _connections_to(cofferd.port) == 1
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if all(client.request("GET", "secret/data/child").body["data"]["data"] == {"v": "c"}
                       for _ in range(300)):
                    code = 0
            finally:
                os._exit(code)
        answers = [client.request("GET", "secret/data/parent").body["data"]["data"] for _ in range(300)]
        _, status = os.waitpid(pid, 0)
        assert all(answer == {"v": "p"} for answer in answers)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the child read an answer not its own"
        assert _connections_to(cofferd.port) == 1


def test_no_fallback_is_unavailable_and_refusals_are_not_fallen_back(cofferd):
    with coffer.connect(f"http://127.0.0.1:{_free_port()}", token="t", environment=False,
                        retry={"attempts": 1}) as client:
        with pytest.raises(coffer.UnavailableError) as error:
            client.read("app")
        assert "APP_*" in str(error.value) and client.degraded
    policy = 'path "secret/data/app" { capabilities = ["read"] }'
    assert _call(cofferd.addr, "PUT", "sys/policies/acl/app", {"policy": policy}, cofferd.root)[0] == 204
    _, created = _call(cofferd.addr, "POST", "auth/token/create", {"policies": ["app"]}, cofferd.root)
    limited = created["auth"]["client_token"]
    os.environ["OTHER_PASSWORD"] = "from-environment"
    try:
        with coffer.connect(cofferd.addr, token=limited) as client:
            with pytest.raises(coffer.PermissionDeniedError) as denied:
                client.read("other")
            assert limited not in str(denied.value)
            with pytest.raises(coffer.NotFoundError):
                client.read("app")
            assert client.degraded is False
            response = client.request("GET", "auth/token/lookup-self")
            assert response.status == 200 and response.body["data"]["policies"] == ["app", "default"]
            wrapped = client.request("GET", "auth/token/lookup-self", wrap_ttl="60s")
            assert wrapped.body["wrap_info"]["ttl"] == 60 and wrapped.body["data"] is None
            with pytest.raises(coffer.InvalidArgumentError) as address:
                client.request("GET", "auth/token/lookup-self", client_address="10.0.0.1")
            assert "client_address" in str(address.value)
            with pytest.raises(coffer.InvalidArgumentError) as local_only:
                client.kv.put("app", {"a": "b"})
            assert "local coffer handle" in str(local_only.value)
    finally:
        del os.environ["OTHER_PASSWORD"]


def test_approle_login_and_renewal(cofferd):
    root = cofferd.root
    assert _call(cofferd.addr, "POST", "sys/auth/approle", {"type": "approle"}, root)[0] == 204
    policy = 'path "secret/data/app" { capabilities = ["read"] }'
    assert _call(cofferd.addr, "PUT", "sys/policies/acl/app", {"policy": policy}, root)[0] == 204
    assert _call(cofferd.addr, "POST", "auth/approle/role/app",
                 {"token_policies": ["app"], "token_ttl": "3s", "token_max_ttl": "1h"}, root)[0] == 204
    role_id = _call(cofferd.addr, "GET", "auth/approle/role/app/role-id", token=root)[1]["data"]["role_id"]
    secret_id = _call(cofferd.addr, "POST", "auth/approle/role/app/secret-id", {}, root)[1]["data"]["secret_id"]
    assert _call(cofferd.addr, "POST", "secret/data/app", {"data": {"password": "p"}}, root)[0] == 200

    with coffer.connect(cofferd.addr, approle=(role_id, secret_id), cache_ttl=0) as client:
        assert client.read("app") == coffer.SecretRead({"password": "p"}, 1, "store", False)
        assert _counter(client, "coffer.client.auth.logins") == 1
        # The 3 s token is renewed from 2 s on, by the next call that needs it.
        _wait_for(lambda: client.read("app").source == "store" and _counter(client, "coffer.client.auth.renewals") >= 1,
                  "a renewal of the AppRole token", interval=0.1)
        assert _counter(client, "coffer.client.auth.logins") == 1
        ttl = client.request("GET", "auth/token/lookup-self").body["data"]["ttl"]
        assert 0 < ttl <= 3
        metrics = client.metrics() + client.metrics("prometheus")
        assert secret_id not in metrics and role_id not in metrics

    with pytest.raises(coffer.PermissionDeniedError) as refused:
        coffer.connect(cofferd.addr, approle=(role_id, "wrong-secret-id"))
    assert "auth/approle/login" in str(refused.value) and "wrong-secret-id" not in str(refused.value)


def test_jwt_login(cofferd):
    import jwt  # pyjwt and cryptography: the Makefile's venv has them (PIP_PACKAGES)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = cofferd.root
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert _call(cofferd.addr, "POST", "sys/auth/jwt", {"type": "jwt"}, root)[0] == 204
    assert _call(cofferd.addr, "POST", "auth/jwt/config", {"jwt_validation_pubkeys": [public]}, root)[0] == 204
    policy = 'path "secret/data/app" { capabilities = ["read"] }'
    assert _call(cofferd.addr, "PUT", "sys/policies/acl/app", {"policy": policy}, root)[0] == 204
    assert _call(cofferd.addr, "POST", "auth/jwt/role/svc",
                 {"role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub", "token_policies": ["app"],
                  "token_ttl": "1h"}, root)[0] == 204
    assert _call(cofferd.addr, "POST", "secret/data/app", {"data": {"password": "p"}}, root)[0] == 200
    now = int(time.time())
    token = jwt.encode({"sub": "svc-1", "aud": "coffer", "iat": now, "nbf": now - 5, "exp": now + 600}, key,
                       algorithm="ES256")
    with coffer.connect(cofferd.addr, jwt=("svc", token), cache_ttl=0) as client:
        assert client.read("app") == coffer.SecretRead({"password": "p"}, 1, "store", False)
        assert _counter(client, "coffer.client.auth.logins") == 1
        assert client.request("GET", "auth/token/lookup-self").body["data"]["policies"] == ["app", "default"]
    with pytest.raises(coffer.PermissionDeniedError) as refused:
        coffer.connect(cofferd.addr, jwt=("svc", token[:-4] + "AAAA"))
    assert "auth/jwt/login" in str(refused.value) and token not in str(refused.value)


def test_bad_env_file_fails_open_with_the_line_number(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("GOOD=1\nthis line has no equals s3cret\n")
    with pytest.raises(coffer.InvalidArgumentError) as error:
        coffer.connect("http://127.0.0.1:1", token="t", env_file=str(env_file))
    assert "line 2: expected KEY=value" in str(error.value) and "s3cret" not in str(error.value)
    with pytest.raises(coffer.InvalidArgumentError) as error:
        coffer.connect("http://127.0.0.1:1", token="t", cache={"tll": 1})
    assert "remote.cache.tll" in str(error.value)


class FakeStore:
    """A Vault v1 stand-in on `websockets`: GET /v1/secret/data/app answers the current value over plain
    HTTP; /v1/sys/events/subscribe/kv* is a WebSocket whose connections the test sends events to."""

    def __init__(self):
        import websockets.asyncio.server as ws_server
        from websockets.http11 import Response
        from websockets.datastructures import Headers

        self.value = {"password": "v1"}
        self.version = 1
        self.connections = []
        self.requests = []
        self.connected = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = _free_port()
        store = self

        def process_request(connection, request):
            store.requests.append((request.path, request.headers.get("X-Vault-Token")))
            if request.path.startswith("/v1/sys/events/subscribe/"):
                return None  # the WebSocket handshake
            if request.path == "/v1/secret/data/app":
                body = json.dumps({"data": {"data": store.value, "metadata": {"version": store.version}}}).encode()
                return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(body)))]), body)
            body = b'{"errors":[]}'
            return Response(404, "Not Found", Headers([("Content-Length", str(len(body)))]), body)

        async def handler(ws):
            store.connections.append(ws)
            store.connected.set()
            try:
                await ws.wait_closed()
            finally:
                store.connections.remove(ws)

        async def main():
            self.server = await ws_server.serve(handler, "127.0.0.1", self.port, process_request=process_request)

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(main(), self.loop).result(10)

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def send_event(self, text):
        for ws in list(self.connections):
            self.run(ws.send(text))

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()

        self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_events_over_websocket_invalidate_the_cache():
    store = FakeStore()
    try:
        with coffer.connect(f"http://127.0.0.1:{store.port}", token="tok-1", cache_ttl=300) as client:
            assert store.connected.wait(15), "the client did not subscribe"
            assert ("/v1/sys/events/subscribe/kv*?json=true", "tok-1") in store.requests
            assert _wait_for(lambda: _gauge(client, "coffer.client.events.subscribed") == 1, "the subscribed gauge")
            assert client.read("app") == coffer.SecretRead({"password": "v1"}, 1, "store", False)
            store.value, store.version = {"password": "v2"}, 2
            assert client.read("app") == coffer.SecretRead({"password": "v1"}, 1, "cache", False)
            # A ping is answered (a masked pong: the server would close on an unmasked frame).
            ws = store.connections[0]
            store.run(asyncio.wait_for(_ping(ws), 10))
            event = {
                "id": "e1", "source": "vault://test", "specversion": "1.0", "type": "*",
                "datacontentype": "application/cloudevents", "time": "2026-12-01T20:00:00Z",
                "data": {"event": {"id": "e1", "metadata": {
                    "current_version": "2", "oldest_version": "0", "data_path": "secret/data/app", "modified": "true",
                    "operation": "data-write", "path": "secret/data/app"}},
                    "event_type": "kv-v2/data-write",
                    "plugin_info": {"mount_class": "secret", "mount_accessor": "kv_1", "mount_path": "secret/",
                                    "plugin": "kv"}},
            }
            store.send_event(json.dumps({**event, "data": {**event["data"], "event": {"id": "e0", "metadata": {
                "data_path": "secret/data/other", "path": "secret/data/other"}}}}))
            store.send_event(json.dumps(event))
            _wait_for(lambda: _counter(client, "coffer.client.cache.invalidations") >= 1, "the invalidation")
            assert client.read("app") == coffer.SecretRead({"password": "v2"}, 2, "store", False)
            assert _counter(client, "coffer.client.cache.invalidations") == 1, "only the entry the event names"
            seen = [(e["event_type"], e["data"]["metadata"]["data_path"], e["data"]["dropped"])
                    for e in client.events()]
            assert seen == [("kv-v2/data-write", "secret/data/other", 0), ("kv-v2/data-write", "secret/data/app", 1)]
        _wait_for(lambda: not store.connections, "the client to close its subscription")
    finally:
        store.stop()


async def _ping(ws):
    waiter = await ws.ping(b"are you there")
    await waiter


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def _certificate_authority(directory, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=coffer test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return os.path.join(directory, f"{name}.crt")


def test_https_with_a_ca_file(tmp_path):
    directory = str(tmp_path)
    ca = _certificate_authority(directory, "ca")
    other_ca = _certificate_authority(directory, "other-ca")
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=server", cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
             "server.crt", "-days", "2", "-extfile", "server.ext", cwd=directory)
    port = _free_port()
    config = os.path.join(directory, "coffer.hcl")
    with open(config, "w") as f:
        f.write(f'storage "memory" {{}}\nlistener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
                f'  tls_cert_file = "{directory}/server.crt"\n  tls_key_file = "{directory}/server.key"\n}}\n')
    log = open(os.path.join(directory, "cofferd.log"), "ab")
    proc = subprocess.Popen([_cofferd(), f"-config={config}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    addr, context = f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=ca)
    try:
        def listening():
            assert proc.poll() is None, "cofferd exited"
            try:
                return _call(addr, "GET", "sys/seal-status", context=context)[0] == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        _wait_for(listening, "cofferd to listen on TLS", timeout=60, interval=0.05)
        _, init = _call(addr, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, context=context)
        root = init["root_token"]
        _call(addr, "PUT", "sys/unseal", {"key": init["keys"][0]}, context=context)
        assert _call(addr, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, root,
                     context=context)[0] == 204
        assert _call(addr, "POST", "secret/data/app", {"data": {"password": "tls"}}, root, context=context)[0] == 200
        with coffer.connect(addr, token=root, ca_file=ca) as client:
            assert client.read("app") == coffer.SecretRead({"password": "tls"}, 1, "store", False)
        with coffer.connect(addr, token=root, ca_file=other_ca, environment=False, retry={"attempts": 1}) as client:
            with pytest.raises(coffer.UnavailableError) as refused:
                client.read("app")
            assert "certificate verify failed" in str(refused.value) and root not in str(refused.value)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
