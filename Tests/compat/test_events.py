"""Issue 20, item 1: events over `GET /v1/sys/events/subscribe/<glob>?json=true` upgraded to a WebSocket
(docs/events.md), as `vault events subscribe` uses it, with a real WebSocket client (Python's
`websockets`) against a real cofferd; writes made with the unmodified bao CLI and hvac.

OpenBao has no events (Vault has them in Enterprise), so Vault's documented shape is the reference:
CloudEvents 1.0 JSON with data.event.metadata holding the path and the version as strings."""
import json
import socket
import base64
import os

import hvac
import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import run_bao, start_cofferd_dev


@pytest.fixture(scope="module")
def server(cofferd_bin):
    s = start_cofferd_dev(cofferd_bin)
    yield s
    s.stop()


def ws_url(server, pattern, json_flag=True):
    return f"ws://{server.hostport}/v1/sys/events/subscribe/{pattern}" + ("?json=true" if json_flag else "")


def subscribe(server, pattern, token="root", namespace=None):
    headers = {"X-Vault-Token": token}
    if namespace:
        headers["X-Vault-Namespace"] = namespace
    return connect(ws_url(server, pattern), additional_headers=headers, open_timeout=10)


def v1(server, method, path, token="root", **kw):
    return requests.request(method, f"{server.addr}/v1/{path}", headers={"X-Vault-Token": token}, timeout=10, **kw)


def token_with(server, name, policy):
    assert v1(server, "PUT", f"sys/policy/{name}", json={"policy": policy}).status_code == 204
    r = v1(server, "POST", "auth/token/create", json={"policies": [name]})
    assert r.status_code == 200, r.text
    return r.json()["auth"]["client_token"]


def receive(ws, timeout=10):
    return json.loads(ws.recv(timeout=timeout))


def test_hvac_and_bao_writes_arrive_with_vaults_metadata_and_no_values(server, bao_bin):
    with subscribe(server, "kv*") as ws:
        client = hvac.Client(url=server.addr, token="root")
        client.secrets.kv.v2.create_or_update_secret(path="app", secret={"password": "hvac-secret-value"})
        event = receive(ws)
        assert event["specversion"] == "1.0" and event["type"] == "*"
        assert event["datacontentype"] == "application/cloudevents"
        assert event["source"].startswith("vault://") and event["id"] == event["data"]["event"]["id"]
        assert event["data"]["event_type"] == "kv-v2/data-write"
        assert event["data"]["event"]["metadata"] == {
            "current_version": "1", "oldest_version": "0", "data_path": "secret/data/app", "modified": "true",
            "operation": "data-write", "path": "secret/data/app",
        }
        plugin = event["data"]["plugin_info"]
        assert plugin["mount_path"] == "secret/" and plugin["plugin"] == "kv" and plugin["mount_accessor"]
        assert plugin["mount_class"] == "secret"

        run_bao(bao_bin, server.addr, "kv", "put", "secret/app", "password=bao-secret-value", token="root")
        second = receive(ws)
        assert second["data"]["event_type"] == "kv-v2/data-write"
        assert second["data"]["event"]["metadata"]["current_version"] == "2"

        run_bao(bao_bin, server.addr, "kv", "delete", "secret/app", token="root")
        deleted = receive(ws)
        assert deleted["data"]["event_type"] == "kv-v2/data-delete"
        assert deleted["data"]["event"]["metadata"]["path"] == "secret/data/app"

        text = json.dumps([event, second, deleted])
        assert "hvac-secret-value" not in text and "bao-secret-value" not in text


def test_kv_v1_write_and_delete(server):
    assert v1(server, "POST", "sys/mounts/kv1", json={"type": "kv", "options": {"version": "1"}}).status_code == 204
    with subscribe(server, "kv-v1/*") as ws:
        assert v1(server, "PUT", "kv1/app", json={"api_key": "v1-secret-value"}).status_code == 204
        assert v1(server, "DELETE", "kv1/app").status_code == 204
        write, delete = receive(ws), receive(ws)
    assert write["data"]["event_type"] == "kv-v1/write"
    assert write["data"]["event"]["metadata"] == {
        "data_path": "kv1/app", "modified": "true", "operation": "write", "path": "kv1/app"}
    assert delete["data"]["event_type"] == "kv-v1/delete"
    assert "v1-secret-value" not in json.dumps([write, delete])


def test_a_token_without_subscribe_is_refused_or_sees_nothing(server):
    reader = token_with(server, "events-reader-only", 'path "secret/data/*" { capabilities = ["read"] }')
    # An exact event type is checked at once: 403 before the upgrade.
    with pytest.raises(InvalidStatus) as refused:
        subscribe(server, "kv-v2/data-write", token=reader)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as bad_token:
        subscribe(server, "kv*", token="no-such-token")
    assert bad_token.value.response.status_code == 403
    # A glob is checked event by event: this token sees none, while a root subscriber gets the write.
    with subscribe(server, "kv*", token=reader) as denied, subscribe(server, "kv*") as root:
        v1(server, "PUT", "secret/data/denied", json={"data": {"k": "v"}})
        assert receive(root)["data"]["event"]["metadata"]["path"] == "secret/data/denied"
        with pytest.raises(TimeoutError):
            denied.recv(timeout=1)


def test_read_on_the_data_path_decides_which_events_a_subscriber_sees(server):
    token = token_with(server, "events-partial", """
        path "sys/events/subscribe/*" { capabilities = ["subscribe"] }
        path "secret/data/allowed/*" { capabilities = ["read"] }
    """)
    with subscribe(server, "kv-v2/data-write", token=token) as ws:
        v1(server, "PUT", "secret/data/hidden/x", json={"data": {"k": "v"}})
        v1(server, "PUT", "secret/data/allowed/x", json={"data": {"k": "v"}})
        # Events come in order: the first this subscriber gets is the second write.
        event = receive(ws)
    assert event["data"]["event"]["metadata"]["path"] == "secret/data/allowed/x"

    # subscribe on the event type is needed too: read alone on the path is not enough.
    no_subscribe = token_with(server, "events-read-no-sub", """
        path "sys/events/subscribe/kv-v2/*" { capabilities = ["subscribe"] }
        path "secret/data/*" { capabilities = ["read"] }
    """)
    with subscribe(server, "kv*", token=no_subscribe) as ws:
        v1(server, "DELETE", "secret/metadata/allowed/x")  # kv-v2/metadata-delete: subscribed
        v1(server, "PUT", "secret/data/allowed/y", json={"data": {"k": "v"}})
        first = receive(ws)
    assert first["data"]["event_type"] == "kv-v2/metadata-delete", "kv-v2/* grants subscribe; read on the data path"
    assert first["data"]["event"]["metadata"]["path"] == "secret/metadata/allowed/x"


def test_without_json_true_the_answer_says_to_use_it(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, "kv*", json_flag=False), additional_headers={"X-Vault-Token": "root"}, open_timeout=10)
    response = refused.value.response
    assert response.status_code == 400
    assert "json=true" in json.loads(response.body)["errors"][0]
    # A plain GET (no upgrade) says it is a WebSocket.
    r = v1(server, "GET", "sys/events/subscribe/kv*?json=true")
    assert r.status_code == 400 and "WebSocket" in r.json()["errors"][0]


def test_events_of_a_namespace_reach_only_its_subscribers(server):
    assert v1(server, "POST", "sys/namespaces/ns1").status_code in (200, 204)
    ns_headers = {"X-Vault-Token": "root", "X-Vault-Namespace": "ns1"}
    r = requests.post(f"{server.addr}/v1/sys/mounts/secret", headers=ns_headers,
                      json={"type": "kv", "options": {"version": "2"}}, timeout=10)
    assert r.status_code == 204, r.text
    with subscribe(server, "kv*", namespace="ns1") as in_ns1, subscribe(server, "kv*") as in_root:
        requests.put(f"{server.addr}/v1/secret/data/ns-app", headers=ns_headers, json={"data": {"k": "v"}},
                     timeout=10).raise_for_status()
        v1(server, "PUT", "secret/data/root-app", json={"data": {"k": "v"}})
        ns_event = receive(in_ns1)
        root_event = receive(in_root)
    assert ns_event["data"]["event"]["metadata"]["path"] == "secret/data/ns-app"
    assert ns_event["data"]["namespace"] == "ns1/"
    assert root_event["data"]["event"]["metadata"]["path"] == "secret/data/root-app"


def test_a_subscriber_that_never_reads_is_dropped_and_writers_go_on(server):
    """A raw client does the handshake, then never reads, with a tiny receive buffer. Writes go on
    (each answered); once the server's bounded queue is full the subscription is dropped, counted in
    sys/metrics, and the client finds a Close frame that says why at the end of what it was sent."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = server.hostport.split(":")
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /v1/sys/events/subscribe/kv-v2/data-write?json=true HTTP/1.1\r\nHost: {server.hostport}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\nX-Vault-Token: root\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    session = requests.Session()
    path = "secret/data/" + "slow/" * 150 + "x"  # about 2.5 KB per event
    dropped = False
    for i in range(6000):
        r = session.put(f"{server.addr}/v1/{path}", headers={"X-Vault-Token": "root"}, json={"data": {"i": i}},
                        timeout=10)
        assert r.status_code == 200, r.text
        if i % 200 == 199:
            metrics = v1(server, "GET", "sys/metrics").json()
            counters = {c["Name"]: c["Count"] for c in metrics["Counters"]}
            if counters.get("coffer.events.subscribers_dropped", 0) >= 1:
                dropped = True
                break
    assert dropped, "the subscriber that never reads was not dropped"
    # The client now reads: frames, then a Close frame (1008) with the reason, then the end.
    sock.settimeout(10)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert b"subscriber too slow" in data
    sock.close()
