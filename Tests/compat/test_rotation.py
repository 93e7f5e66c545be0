"""Issue 20, item 2: rotation of a KV v2 secret (docs/rotation.md) against a real cofferd, driven by
the unmodified bao CLI (`bao write secret/rotation/...`, `bao kv get`): the whole sequence with an
acknowledgement, a failed validation that rolls back (the old value is current again), a failing
generator that writes nothing, the scheduler on cofferd's own clock, the REST alias and the events."""
import json
import os
import time

import requests

from conftest import run_bao, start_cofferd_dev

LENGTH_CHECK = '["/bin/sh","-c","read -r v; [ ${#v} -ge 20 ]"]'


def bao_json(bao_bin, addr, *args):
    _, out, _ = run_bao(bao_bin, addr, *args, token="root", format="json")
    return json.loads(out) if out.strip() else None


def kv_field(bao_bin, addr, path, field, version=None):
    args = ["kv", "get", f"-field={field}"] + ([f"-version={version}"] if version else []) + [path]
    return run_bao(bao_bin, addr, *args, token="root")[1].strip()


def status(bao_bin, addr, path):
    return bao_json(bao_bin, addr, "read", f"secret/rotation/{path}")["data"]["status"]


def events(server, prefix="kv-v2/rotation"):
    r = requests.get(f"{server.addr}/v1/sys/events/recent", params={"type": prefix},
                     headers={"X-Vault-Token": "root"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]["events"]


def test_rotation_sequence_with_bao_cli(cofferd_bin, bao_bin):
    server = start_cofferd_dev(cofferd_bin)
    try:
        addr = server.addr
        run_bao(bao_bin, addr, "kv", "put", "secret/app", "user=app", "password=initial-password", token="root")
        run_bao(bao_bin, addr, "write", "secret/rotation/app", "generator=bytes", "length=24", "grace_period=1h",
                "required_acks=web", f"validate_command={LENGTH_CHECK}", token="root")
        policy = bao_json(bao_bin, addr, "read", "secret/rotation/app")["data"]
        assert policy["generator"] == "bytes" and policy["grace_period"] == "1h0m0s"
        assert policy["required_acks"] == ["web"] and policy["status"]["phase"] == "idle"

        run = bao_json(bao_bin, addr, "write", "-f", "secret/rotate/app")["data"]
        assert run["phase"] == "waiting" and run["run"]["old_version"] == 1 and run["run"]["new_version"] == 2
        new = kv_field(bao_bin, addr, "secret/app", "password")
        assert new != "initial-password" and len(new) == 32  # 24 bytes in base64
        assert kv_field(bao_bin, addr, "secret/app", "user") == "app"
        # Within the grace period the previous version is still there.
        assert kv_field(bao_bin, addr, "secret/app", "password", version=1) == "initial-password"

        code, _, err = run_bao(bao_bin, addr, "write", "secret/rotation-ack/app", "consumer=web", "version=1",
                               token="root", check=False)
        assert code == 2 and "not awaiting acknowledgement" in err
        done = bao_json(bao_bin, addr, "write", "secret/rotation-ack/app", "consumer=web", "version=2")["data"]
        assert done["phase"] == "idle" and done["last_run"]["outcome"] == "succeeded"
        assert done["last_run"]["archived_version"] == 1
        meta = bao_json(bao_bin, addr, "kv", "metadata", "get", "secret/app")["data"]
        assert meta["current_version"] == 2 and meta["versions"]["1"]["deletion_time"] != ""

        types = [e["event_type"] for e in events(server)]
        assert types == ["kv-v2/rotation-started", "kv-v2/rotation-succeeded", "kv-v2/rotation-archived"]
        text = json.dumps(events(server))
        assert new not in text and "initial-password" not in text
        succeeded = events(server)[1]["data"]["metadata"]
        assert succeeded["path"] == "secret/data/app" and succeeded["new_version"] == "2"
    finally:
        server.stop()


def test_failed_validation_rolls_back_and_old_version_is_current(cofferd_bin, bao_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    try:
        addr = server.addr
        run_bao(bao_bin, addr, "kv", "put", "secret/db", "password=the-old-password", token="root")

        # A validator that refuses every candidate: nothing is written.
        run_bao(bao_bin, addr, "write", "secret/rotation/db", 'validate_command=["/bin/false"]', token="root")
        run = bao_json(bao_bin, addr, "write", "-f", "secret/rotate/db")
        assert run["data"]["last_run"]["outcome"] == "failed"
        assert run["data"]["last_run"]["error"] == "validation: /bin/false exited with status 1"
        assert run["warnings"] == ["rotation failed: validation: /bin/false exited with status 1"]
        assert bao_json(bao_bin, addr, "kv", "metadata", "get", "secret/db")["data"]["current_version"] == 1

        # Valid before the write, invalid in the post-write check: rolled back.
        flag = os.path.join(workdir, "validated-once")
        check = json.dumps(["/bin/sh", "-c", f"cat >/dev/null; [ ! -e {flag} ] && touch {flag}"])
        run_bao(bao_bin, addr, "write", "secret/rotation/db", f"validate_command={check}", token="root")
        run = bao_json(bao_bin, addr, "write", "-f", "secret/rotate/db")["data"]
        assert run["last_run"]["outcome"] == "rolled-back"
        assert run["last_run"]["error"] == "post-write check: /bin/sh exited with status 1"
        # The old value is current again, as version 3; the rejected version 2 is soft-deleted.
        assert kv_field(bao_bin, addr, "secret/db", "password") == "the-old-password"
        meta = bao_json(bao_bin, addr, "kv", "metadata", "get", "secret/db")["data"]
        assert meta["current_version"] == 3 and meta["versions"]["2"]["deletion_time"] != ""
        rolled = [e for e in events(server) if e["event_type"] == "kv-v2/rotation-rolled-back"]
        assert len(rolled) == 1
        assert rolled[0]["data"]["metadata"]["current_version"] == "3"
        assert rolled[0]["data"]["metadata"]["reason"] == "post-write check: /bin/sh exited with status 1"
        assert [e["event_type"] for e in events(server, "kv-v2/rotation-failed")] == ["kv-v2/rotation-failed"]

        # A consumer that cannot use the new version rolls it back through the ack path.
        run_bao(bao_bin, addr, "write", "secret/rotation/db", "grace_period=1h", token="root")
        run = bao_json(bao_bin, addr, "write", "-f", "secret/rotate/db")["data"]
        assert run["phase"] == "waiting" and run["run"]["new_version"] == 4
        nack = bao_json(bao_bin, addr, "write", "secret/rotation-ack/db", "consumer=api", "version=4", "ok=false")
        assert nack["data"]["last_run"]["outcome"] == "rolled-back"
        assert kv_field(bao_bin, addr, "secret/db", "password") == "the-old-password"
    finally:
        server.stop()


def test_hanging_generator_times_out_and_scheduler_runs(cofferd_bin, bao_bin):
    server = start_cofferd_dev(cofferd_bin)
    try:
        addr = server.addr
        run_bao(bao_bin, addr, "kv", "put", "secret/slow", "password=p0", token="root")
        run_bao(bao_bin, addr, "write", "secret/rotation/slow", "generator=command", 'command=["/bin/sleep","60"]',
                "timeout=1s", token="root")
        started = time.monotonic()
        run = bao_json(bao_bin, addr, "write", "-f", "secret/rotate/slow")["data"]
        assert time.monotonic() - started < 10
        assert run["last_run"]["error"] == "generator: /bin/sleep did not finish within 1s and was killed"
        assert kv_field(bao_bin, addr, "secret/slow", "password") == "p0"

        # The scheduler, on cofferd's clock: a 5 s period rotates without a request.
        run_bao(bao_bin, addr, "kv", "put", "secret/timed", "password=p0", token="root")
        run_bao(bao_bin, addr, "write", "secret/rotation/timed", "period=5s", token="root")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and status(bao_bin, addr, "timed")["last_run"] is None:
            time.sleep(0.2)
        last = status(bao_bin, addr, "timed")["last_run"]
        assert last is not None and last["outcome"] == "succeeded" and last["reason"] == "schedule"
        assert kv_field(bao_bin, addr, "secret/timed", "password") != "p0"

        # The seeds' REST alias rotates now.
        r = requests.post(f"{addr}/api/v1/secrets/timed/rotate", headers={"Authorization": "Bearer root"},
                          timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["last_run"]["reason"] == "manual"
        assert r.json()["data"]["last_run"]["outcome"] == "succeeded"
    finally:
        server.stop()


def test_webhook_generator_and_validator(cofferd_bin, bao_bin):
    """A webhook generator and a webhook validator (a local HTTP server): the candidate reaches the
    validator in the body; a validator answering 500 leaves the secret as it was."""
    import http.server
    import threading

    seen = []
    verdict = {"status": 200}

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            if self.path == "/generate":
                answer, status = json.dumps({"value": "from-the-webhook-0123456789"}).encode(), 200
            else:
                answer, status = b"{}", verdict["status"]
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{hooks.server_address[1]}"
    server = start_cofferd_dev(cofferd_bin)
    try:
        addr = server.addr
        run_bao(bao_bin, addr, "kv", "put", "secret/hooked", "password=p0", "host=db", token="root")
        run_bao(bao_bin, addr, "write", "secret/rotation/hooked", "generator=webhook", f"url={base}/generate",
                f"validate_url={base}/validate", "timeout=5s", "validate_timeout=5s", token="root")
        run = bao_json(bao_bin, addr, "write", "-f", "secret/rotate/hooked")["data"]
        assert run["last_run"]["outcome"] == "succeeded", run
        assert kv_field(bao_bin, addr, "secret/hooked", "password") == "from-the-webhook-0123456789"
        assert kv_field(bao_bin, addr, "secret/hooked", "host") == "db"
        assert seen[0] == ("/generate", {"path": "secret/data/hooked", "field": "password"})
        # Validated before the write and again after it (the post-write check), the value in the body.
        assert [p for p, _ in seen[1:]] == ["/validate", "/validate"]
        assert seen[1][1]["value"] == "from-the-webhook-0123456789" and seen[1][1]["version"] == 2

        verdict["status"] = 500
        run = bao_json(bao_bin, addr, "write", "-f", "secret/rotate/hooked")["data"]
        assert run["last_run"]["outcome"] == "failed"
        assert run["last_run"]["error"] == "validation: the webhook answered HTTP status 500"
        assert bao_json(bao_bin, addr, "kv", "metadata", "get", "secret/hooked")["data"]["current_version"] == 2
    finally:
        server.stop()
        hooks.shutdown()
