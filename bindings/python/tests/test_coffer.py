"""Tests of the Python binding against the real libcoffer (COFFER_LIBRARY or libcoffer.so.0)."""

import base64
import json
import os
import threading

import pytest

import coffer


def open_initialised(path):
    """A SQLite-backed Coffer, initialised with 3 shares (threshold 2), sealed again; returns it, the
    keys and the root token."""
    c = coffer.Coffer({"storage": {"type": "sqlite", "path": str(path)}})
    init = c.request("PUT", "sys/init", body={"secret_shares": 3, "secret_threshold": 2})
    assert init.status == 200
    keys, token = init.body["keys"], init.body["root_token"]
    c.request("PUT", "sys/seal", token=token)
    return c, keys, token


def unseal(c, keys):
    for key in keys:
        status = c.request("PUT", "sys/unseal", body={"key": key}).body
    assert status["sealed"] is False


def test_versions():
    assert coffer.version() == "0.1.0"
    assert coffer.abi_version() == 0


def test_sqlite_lifecycle_survives_reopen(tmp_path):
    db = tmp_path / "coffer.db"
    c, keys, token = open_initialised(db)
    with c:
        with pytest.raises(coffer.SealedError) as sealed:
            c.kv.get("app/db", token=token)
        assert str(sealed.value) == "Vault is sealed"
        assert sealed.value.code == -2
        unseal(c, keys[:2])
        c.token = token
        c.request("POST", "sys/mounts/secret", body={"type": "kv", "options": {"version": "2"}})
        assert c.kv.put("app/db", {"password": "s3cret", "port": 5432}) == 1
        assert c.kv.put("app/db", {"password": "two"}, cas=1) == 2
    assert c.closed
    with pytest.raises(coffer.InvalidArgumentError):
        c.kv.get("app/db")

    with coffer.Coffer(json.dumps({"storage": {"type": "sqlite", "path": str(db)}}), token=token) as again:
        status = again.request("GET", "sys/seal-status").body
        assert status["initialized"] is True and status["sealed"] is True and status["t"] == 2
        unseal(again, keys[1:])
        assert again.kv.get("app/db") == coffer.KVSecret({"password": "two"}, 2)
        assert again.kv.get("app/db", version=1).data == {"password": "s3cret", "port": 5432}


def test_request_returns_the_http_json():
    with coffer.Coffer({"dev": True}, token="root") as c:
        written = c.request("PUT", "secret/data/app", body={"data": {"a": "b"}})
        assert written.status == 200
        assert written.body["data"]["version"] == 1
        assert set(written.body) == {"request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info",
                                     "warnings", "auth"}
        read = c.request("GET", "secret/data/app?version=1")
        assert read.body["data"]["data"] == {"a": "b"}
        assert json.loads(read.raw) == read.body
        listed = c.request("LIST", "secret/metadata/")
        assert listed.body["data"]["keys"] == ["app"]
        deleted = c.request("DELETE", "secret/data/app")
        assert deleted.status == 204 and deleted.body is None


def test_wrapped_answers_and_client_address():
    with coffer.Coffer({"dev": True}, token="root") as c:
        c.request("PUT", "secret/data/app", body={"data": {"a": "b"}})
        wrapped = c.request("GET", "secret/data/app", wrap_ttl="90s")
        info = wrapped.body["wrap_info"]
        assert wrapped.body["data"] is None and info["ttl"] == 90 and info["creation_path"] == "secret/data/app"
        unwrapped = c.request("PUT", "sys/wrapping/unwrap", body={"token": info["token"]})
        assert unwrapped.body["data"]["data"] == {"a": "b"}
        with pytest.raises(coffer.InvalidArgumentError) as again:
            c.request("PUT", "sys/wrapping/unwrap", body={"token": info["token"]})
        assert "wrapping token is not valid or does not exist" in str(again.value)
        with pytest.raises(coffer.InvalidArgumentError) as bad:
            c.request("GET", "secret/data/app", wrap_ttl="abc")
        assert "error parsing X-Vault-Wrap-TTL header" in str(bad.value)

        # A token bound to 10.0.0.0/8 works only for calls that say they act for an address inside it.
        c.request("PUT", "sys/policies/acl/r", body={"policy": 'path "secret/*" { capabilities = ["read"] }'})
        c.request("POST", "sys/auth/approle", body={"type": "approle"})
        c.request("POST", "auth/approle/role/app",
                  body={"token_policies": ["r"], "token_bound_cidrs": ["10.0.0.0/8"]})
        role_id = c.request("GET", "auth/approle/role/app/role-id").body["data"]["role_id"]
        secret_id = c.request("POST", "auth/approle/role/app/secret-id").body["data"]["secret_id"]
        token = c.request("POST", "auth/approle/login",
                          body={"role_id": role_id, "secret_id": secret_id}).body["auth"]["client_token"]
        assert c.request("GET", "secret/data/app", token=token, client_address="10.2.3.4").body["data"]["data"] == {
            "a": "b"}
        with pytest.raises(coffer.PermissionDeniedError):
            c.request("GET", "secret/data/app", token=token, client_address="192.168.1.1")
        with pytest.raises(coffer.PermissionDeniedError):
            c.request("GET", "secret/data/app", token=token)


def test_status_codes_become_exception_classes():
    with coffer.Coffer({"dev": {"root_token": "dev-root"}}, token="dev-root") as c:
        with pytest.raises(coffer.NotFoundError) as missing:
            c.kv.get("nothing/here")
        assert "secret/nothing/here" in str(missing.value)
        with pytest.raises(coffer.NotFoundError) as missing_http:
            c.request("GET", "secret/data/nothing/here")
        assert missing_http.value.http_status == 404 and missing_http.value.body == {"errors": []}

        with pytest.raises(coffer.PermissionDeniedError) as denied:
            c.kv.get("a", token="not-a-token")
        assert str(denied.value) == "permission denied" and denied.value.code == -3
        with pytest.raises(coffer.PermissionDeniedError) as denied_http:
            c.request("GET", "secret/data/a", token="not-a-token")
        assert denied_http.value.http_status == 403
        assert denied_http.value.body == {"errors": ["permission denied"]}

        c.kv.put("x", {"v": 1})
        with pytest.raises(coffer.ConflictError) as conflict:
            c.kv.put("x", {"v": 2}, cas=0)
        assert "check-and-set parameter did not match the current version" in str(conflict.value)

        with pytest.raises(coffer.InvalidArgumentError) as bad:
            c.request("PUT", "secret/data/x", body="{not json")
        assert bad.value.http_status == 400 and "failed to parse JSON input" in bad.value.body["errors"][0]
        with pytest.raises(coffer.UnsupportedOperationError):
            c.request("BREW", "secret/data/x")
        with pytest.raises(coffer.AlreadyInitializedError):
            c.request("PUT", "sys/init", body={"secret_shares": 1, "secret_threshold": 1})
        # Each is also a CofferError and, where Python has one, the matching built-in class.
        assert issubclass(coffer.NotFoundError, KeyError) and issubclass(coffer.PermissionDeniedError, PermissionError)


def test_a_rate_limited_call_says_when_to_retry():
    with coffer.Coffer({"dev": True}, token="root") as c:
        c.kv.put("q", {"v": 1})
        c.request("PUT", "sys/quotas/rate-limit/kv",
                  body={"rate": 2, "interval": "10s", "block_interval": "30s", "path": "secret/"})
        c.kv.get("q")
        c.request("GET", "secret/data/q")
        with pytest.raises(coffer.RateLimitedError) as refused:
            c.request("GET", "secret/data/q")
        assert refused.value.http_status == 429 and refused.value.retry_after == 29
        assert refused.value.body == {"errors": ['request path "secret/data/q": rate limit quota exceeded']}
        # The fast path is refused alike while the client is blocked; a success clears the retry time.
        with pytest.raises(coffer.RateLimitedError) as fast:
            c.kv.get("q")
        assert fast.value.retry_after in (28, 29)
        c.request("GET", "sys/seal-status")
        assert coffer._native.lib.coffer_retry_after() == -1


def test_configuration_errors_name_the_key(tmp_path):
    with pytest.raises(coffer.InvalidArgumentError, match=r"unknown configuration key 'storage\.paht'"):
        coffer.Coffer({"storage": {"type": "sqlite", "paht": str(tmp_path / "x.db")}})
    with pytest.raises(coffer.InvalidArgumentError, match="'storage' is required"):
        coffer.Coffer({})
    with pytest.raises(coffer.InvalidArgumentError, match="not valid JSON"):
        coffer.Coffer("{")
    with pytest.raises(coffer.StorageIOError):
        coffer.Coffer({"storage": {"type": "sqlite", "path": str(tmp_path / "no" / "such" / "dir.db")}})
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(coffer.CorruptDatabaseError):
        coffer.Coffer({"storage": {"type": "sqlite", "path": str(garbage)}})
    assert garbage.read_bytes() == b"not a database" * 100


def test_threads_share_one_coffer():
    errors = []
    with coffer.Coffer({"dev": True}, token="root") as c:
        def work(n):
            try:
                for round_ in range(1, 21):
                    assert c.kv.put(f"t/{n}", {"n": n, "round": round_}) == round_
                    assert c.kv.get(f"t/{n}") == coffer.KVSecret({"n": n, "round": round_}, round_)
                    with pytest.raises(coffer.NotFoundError, match=f"secret/missing/{n}"):
                        c.kv.get(f"missing/{n}")
            except BaseException as error:  # collected and re-raised on the main thread
                errors.append(error)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_transit_fast_path_round_trips_raw_bytes():
    with coffer.Coffer({"dev": True}, token="root") as c:
        assert c.request("POST", "sys/mounts/transit", body={"type": "transit"}).status == 204
        secret = b"card\x00number\xff 4111-1111"
        ciphertext = c.transit.encrypt("payments", secret)
        assert ciphertext.startswith("vault:v1:")
        assert c.transit.decrypt("payments", ciphertext) == secret
        # The same ciphertext through the HTTP API's JSON: base64 of the same bytes.
        body = c.request("POST", "transit/decrypt/payments", body={"ciphertext": ciphertext}).body
        import base64
        assert base64.b64decode(body["data"]["plaintext"]) == secret
        tampered = ciphertext[:-4] + ("AAAA" if not ciphertext.endswith("AAAA") else "BBBB")
        with pytest.raises(coffer.InvalidArgumentError):
            c.transit.decrypt("payments", tampered)
        limited = c.request("POST", "auth/token/create", body={"policies": ["default"]}).body["auth"]["client_token"]
        with pytest.raises(coffer.PermissionDeniedError):
            c.transit.encrypt("payments", b"x", token=limited)


def test_a_process_that_exits_without_closing_still_writes_its_audit_records(tmp_path):
    """A read's audit records wait (about a millisecond) for the device's writer thread; a process that
    exits without coffer_close, as a short C program might, must still leave them in the log."""
    import subprocess
    import sys

    log = tmp_path / "audit.log"
    config = {"dev": True, "audit": [{"path": "file", "type": "file", "options": {"file_path": str(log)}}]}
    script = f"""
import coffer, json, sys
c = coffer.Coffer({json.dumps(config)!r}, token="root")
c.kv.put("app", {{"password": "exit-without-close"}})
assert c.kv.get("app").data == {{"password": "exit-without-close"}}
c._handle = None  # forgotten: nothing closes it
sys.exit(0)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    reads = [(r["type"], r["request"]["path"]) for r in records if r["request"]["operation"] == "read"]
    assert reads == [("request", "secret/data/app"), ("response", "secret/data/app")]
    assert "exit-without-close" not in log.read_text()


def test_metrics_in_both_forms():
    with coffer.Coffer({"dev": True}, token="root") as c:
        c.kv.put("m", {"pw": "not-in-metrics"})
        for _ in range(3):
            c.kv.get("m")
        body = json.loads(c.metrics())
        assert list(body) == ["Timestamp", "Gauges", "Points", "Counters", "Samples"]
        reads = next(s for s in body["Samples"] if s["Name"] == "vault.route.read.secret-")
        assert reads["Count"] == 3
        text = c.metrics("prometheus")
        assert "\nvault_route_read_secret__count 3\n" in text
        assert "not-in-metrics" not in text + json.dumps(body)
        with pytest.raises(coffer.InvalidArgumentError, match='metrics format "yaml" unknown'):
            c.metrics("yaml")


def test_namespaces_isolate_tenants_over_the_c_abi():
    """Issue 19: every call can name a namespace, by the `namespace` option (coffer_request_opts.ns) or
    by the path; a tenant's token reaches its own namespace only, the fast paths included."""
    with coffer.Coffer({"dev": True}, token="root") as c:
        tokens = {}
        for tenant in ("team-a", "team-b"):
            assert c.request("POST", f"sys/namespaces/{tenant}").body["data"]["path"] == f"{tenant}/"
            c.request("POST", "sys/mounts/kv", body={"type": "kv", "options": {"version": "2"}}, namespace=tenant)
            assert c.kv.put("db", {"password": f"{tenant}-secret"}, mount=f"{tenant}/kv") == 1
            c.request("PUT", "sys/policies/acl/reader", namespace=tenant,
                      body={"policy": 'path "kv/data/*" { capabilities = ["read"] }'})
            created = c.request("POST", "auth/token/create", body={"policies": ["reader"]}, namespace=tenant)
            tokens[tenant] = created.body["auth"]["client_token"]
        a = tokens["team-a"]
        assert c.kv.get("db", mount="team-a/kv", token=a).data == {"password": "team-a-secret"}
        assert c.request("GET", "kv/data/db", token=a, namespace="team-a").body["data"]["data"] == \
            {"password": "team-a-secret"}
        for call in (
            lambda: c.kv.get("db", mount="team-b/kv", token=a),
            lambda: c.request("GET", "kv/data/db", token=a, namespace="team-b"),
            lambda: c.request("GET", "team-b/kv/data/db", token=a),
            lambda: c.request("GET", "sys/mounts", token=a, namespace="team-b"),
        ):
            with pytest.raises(coffer.PermissionDeniedError) as denied:
                call()
            assert "team-b-secret" not in str(denied.value.body)
        with pytest.raises(coffer.NotFoundError):
            c.request("GET", "kv/data/db", namespace="team-c")


def test_a_forked_child_repeats_none_of_its_parents_nonces_or_request_ids():
    """A pre-fork server opens the vault, then its workers encrypt. Nonces and request ids come from
    per-thread batches of CSPRNG output; a child forked from that thread must not hand out the ones
    its parent has not used yet: an AES-GCM nonce used twice under one key gives the key's
    authentication away and the XOR of the two plaintexts."""
    with coffer.Coffer({"dev": True}, token="root") as c:
        assert c.request("POST", "sys/mounts/transit", body={"type": "transit"}).status == 204
        c.request("PUT", "secret/data/app", body={"data": {"a": "b"}})

        def draw(count):
            nonces = [base64.b64decode(c.transit.encrypt("k", b"x").split(":")[2])[:12].hex() for _ in range(count)]
            ids = [c.request("GET", "secret/data/app").body["request_id"] for _ in range(count)]
            return nonces, ids

        draw(5)  # this thread's batches exist before the fork
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                os.write(write_end, json.dumps(draw(50)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        parent_nonces, parent_ids = draw(50)
        with os.fdopen(read_end, "rb") as pipe:
            received = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        child_nonces, child_ids = json.loads(received)
        assert len(child_nonces) == 50 and len(child_ids) == 50
        assert not set(child_nonces) & set(parent_nonces), "a nonce was used in both processes"
        assert not set(child_ids) & set(parent_ids), "a request id was used in both processes"
        assert len(set(parent_nonces)) == 50 and len(set(child_nonces)) == 50
