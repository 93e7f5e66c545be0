"""Issue 20, items 5 and 6: sys/metrics (OpenBao's JSON and the Prometheus text, read by the real
prometheus_client parser), who may scrape it, and the seeds' REST contract (/api/v1/secrets, /rotate,
/api/v1/auth/login, /health) as an alias of the /v1/ API. OpenBao (`bao server -dev`) is the reference
for names, sections and shapes."""
import json
import os
import shutil
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import start_bao_dev, start_cofferd_config, start_cofferd_dev


def v1(server, method, path, token="root", **kw):
    headers = {"X-Vault-Token": token} if token else {}
    return requests.request(method, f"{server.addr}/v1/{path}", headers=headers, timeout=10, **kw)


def scrape(server, token=None, fmt=None):
    params = {"format": fmt} if fmt else None
    r = v1(server, "GET", "sys/metrics", token=token, params=params)
    assert r.status_code == 200, r.text
    return r


def families(server, token=None):
    """The Prometheus text of sys/metrics, parsed by prometheus_client: {family name: family}."""
    r = scrape(server, token, "prometheus")
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(fams, family, suffix="_count"):
    """The value of `family`+suffix (a summary's _count or _sum), or a counter's or gauge's value."""
    f = fams.get(family)
    if f is None:
        return 0
    for s in f.samples:
        if s.name in (family + suffix, family + "_total", family) and "quantile" not in s.labels:
            return s.value
    raise AssertionError(f"no sample {family}{suffix} in {f.samples}")


def json_metric(body, section, name):
    return next((m for m in body[section] if m["Name"] == name), None)


def kv_write_and_reads(server, reads, path="metrics/app"):
    assert v1(server, "POST", f"secret/data/{path}", json={"data": {"password": "s3cret-value"}}).status_code == 200
    for _ in range(reads):
        assert v1(server, "GET", f"secret/data/{path}").status_code == 200


# ---- sys/metrics ------------------------------------------------------------------------------------


def test_prometheus_text_parses_and_counts_exactly_what_was_done(cofferd_bin):
    server = start_cofferd_dev(cofferd_bin)
    try:
        kv_write_and_reads(server, 1)
        before = families(server)
        for _ in range(5):
            assert v1(server, "GET", "secret/data/metrics/app").status_code == 200
        after = families(server)
        # The read route and the request latency moved by exactly the five reads (the scrapes, without a
        # token on a -dev listener, do not go through the request pipeline).
        assert before["vault_route_read_secret_"].type == "summary"
        assert sample(after, "vault_route_read_secret_") - sample(before, "vault_route_read_secret_") == 5
        assert sample(after, "vault_core_handle_request") - sample(before, "vault_core_handle_request") == 5
        assert sample(after, "vault_token_lookup") - sample(before, "vault_token_lookup") == 5
        assert sample(after, "vault_route_read_secret_", "_sum") > sample(before, "vault_route_read_secret_", "_sum")
        quantiles = {s.labels["quantile"]: s.value for s in after["vault_route_read_secret_"].samples if "quantile" in s.labels}
        assert set(quantiles) == {"0.5", "0.9", "0.99"}
        assert 0 < quantiles["0.5"] <= quantiles["0.99"] < 1000  # milliseconds, as OpenBao reports them
        assert after["vault_core_unsealed"].type == "gauge"
        assert [s.value for s in after["vault_core_unsealed"].samples] == [1]
        name = v1(server, "GET", "sys/seal-status").json()["cluster_name"]
        assert name.startswith("coffer-cluster-")
        assert after["vault_core_unsealed"].samples[0].labels == {"cluster": name}
        # Neither the secret nor the token is anywhere in the scrape.
        text = scrape(server, fmt="prometheus").text + scrape(server).text
        assert "s3cret-value" not in text and "root" not in text
    finally:
        server.stop()


def test_json_has_openbaos_shape(cofferd_bin, bao_bin):
    coffer = start_cofferd_dev(cofferd_bin)
    bao = start_bao_dev(bao_bin)
    try:
        expected = [
            ("Gauges", "vault.core.unsealed"), ("Gauges", "vault.core.active"), ("Gauges", "vault.expire.num_leases"),
            ("Gauges", "vault.core.mount_table.num_entries"), ("Samples", "vault.core.handle_request"),
            ("Samples", "vault.route.read.secret-"), ("Samples", "vault.route.create.secret-"),
            ("Samples", "vault.barrier.get"), ("Samples", "vault.barrier.put"), ("Samples", "vault.token.lookup"),
        ]
        bodies = {}
        for name, server in (("coffer", coffer), ("bao", bao)):
            kv_write_and_reads(server, 3)
            # OpenBao shows the last finished 10-second interval: wait for one with a create and reads (made
            # again while waiting, so that an interval that ends while a slow machine polls has them too).
            deadline = time.monotonic() + 60
            polls = 0
            while True:
                polls += 1
                if name == "bao":  # (Coffer's figures are live, and counted exactly below)
                    kv_write_and_reads(server, 1, path=f"metrics/poll-{polls}")
                r = scrape(server)
                assert r.headers["Content-Type"].startswith("application/json")
                # No envelope; the same top-level keys in the same order.
                body = r.json(object_pairs_hook=lambda pairs: dict(pairs, __order__=[k for k, _ in pairs]))
                if all(json_metric(body, section, metric) for section, metric in expected):
                    break
                assert time.monotonic() < deadline, (name, [m for _, m in expected if not json_metric(body, _, m)])
                time.sleep(0.5)
            bodies[name] = body
        assert bodies["coffer"]["__order__"] == bodies["bao"]["__order__"] == [
            "Timestamp", "Gauges", "Points", "Counters", "Samples"]
        assert bodies["coffer"]["Points"] == [] == bodies["bao"]["Points"]
        # OpenBao's interval start and Coffer's scrape time print alike: "2026-11-30 10:56:40 +0000 UTC".
        assert bodies["coffer"]["Timestamp"].endswith(" +0000 UTC") and len(bodies["coffer"]["Timestamp"]) == len(
            bodies["bao"]["Timestamp"])
        # Every item has OpenBao's keys in OpenBao's order, section by section.
        for section in ("Gauges", "Counters", "Samples"):
            bao_keys = bodies["bao"][section][0]["__order__"]
            for item in bodies["coffer"][section]:
                assert item["__order__"] == bao_keys, (section, item["Name"])
        # The metrics both have are in the same section (gauge, counter or sample) of both.
        for section, name in expected:
            assert json_metric(bodies["bao"], section, name) is not None, (section, name)
            assert json_metric(bodies["coffer"], section, name) is not None, (section, name)
        reads = json_metric(bodies["coffer"], "Samples", "vault.route.read.secret-")
        assert reads["Count"] == 3 and reads["Min"] <= reads["Mean"] <= reads["Max"] and reads["Sum"] > 0
        # mount_table.num_entries: the same mounts, so the same numbers and labels, cluster name aside.
        def mounts(body):
            return sorted((m["Labels"]["type"], m["Labels"]["local"], m["Value"]) for m in body["Gauges"]
                          if m["Name"] == "vault.core.mount_table.num_entries")
        assert mounts(bodies["coffer"]) == mounts(bodies["bao"])
        # The Prometheus family names and types of the metrics both have agree too.
        theirs = families(bao)
        ours = families(coffer)
        for name in ["vault_core_handle_request", "vault_route_read_secret_", "vault_barrier_get", "vault_core_unsealed",
                     "vault_expire_num_leases", "vault_token_lookup", "vault_audit_log_request_failure"]:
            assert name in theirs and name in ours, name
            assert ours[name].type == theirs[name].type, name
    finally:
        coffer.stop()
        bao.stop()


def test_hvac_reads_sys_metrics(cofferd_dev):
    """hvac (2.x) has no sys/metrics method; its adapter reads the path like any other, with a token,
    and raises hvac's own Forbidden for a bad one on a listener that requires one (see below)."""
    import hvac
    client = hvac.Client(url=cofferd_dev.addr, token="root")
    body = client.adapter.get("/v1/sys/metrics")
    assert isinstance(body, dict) and set(body) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert any(m["Name"] == "vault.core.handle_request" for m in body["Samples"])
    text = client.adapter.get("/v1/sys/metrics", params={"format": "prometheus"})
    assert {f.name for f in text_string_to_metric_families(text.text)} >= {"vault_core_handle_request"}


def test_unknown_format_is_a_400_with_a_clear_error(cofferd_dev):
    for token in ("root", None):
        r = v1(cofferd_dev, "GET", "sys/metrics", token=token, params={"format": "xml"})
        assert r.status_code == 400
        assert r.json() == {"errors": [
            'metric response format "xml" unknown; use format=prometheus, or no format for JSON']}


TOKEN_CONFIG = """
storage "memory" {{}}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
telemetry {{
  prometheus_retention_time = "24h"
  disable_hostname          = true
}}
"""

OPEN_CONFIG = """
storage "memory" {{}}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
  telemetry {{
    unauthenticated_metrics_access = true
  }}
}}
"""


def init_and_unseal(server):
    r = requests.put(f"{server.addr}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert requests.put(f"{server.addr}/v1/sys/unseal", json={"key": body["keys"][0]}, timeout=10).json()["sealed"] is False
    return body["root_token"]


def test_a_token_with_read_on_sys_metrics_is_needed_by_default(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, TOKEN_CONFIG, workdir)
    try:
        root = init_and_unseal(server)
        r = v1(server, "GET", "sys/metrics", token=None)
        assert r.status_code == 403 and r.json() == {"errors": ["permission denied"]}
        assert v1(server, "GET", "sys/metrics", token="not-a-token", params={"format": "prometheus"}).status_code == 403
        # A token whose policy grants read on sys/metrics scrapes; one without it cannot.
        policy = 'path "sys/metrics" { capabilities = ["read"] }'
        assert v1(server, "PUT", "sys/policies/acl/scrape", token=root, json={"policy": policy}).status_code == 204
        scraper = v1(server, "POST", "auth/token/create", token=root, json={"policies": ["scrape"]}).json()["auth"]["client_token"]
        other = v1(server, "POST", "auth/token/create", token=root, json={"policies": ["default"]}).json()["auth"]["client_token"]
        assert v1(server, "GET", "sys/metrics", token=other).status_code == 403
        import hvac
        with pytest.raises(hvac.exceptions.Forbidden):
            hvac.Client(url=server.addr, token=other).adapter.get("/v1/sys/metrics")
        assert "vault_core_handle_request" in families(server, token=scraper)
        assert scrape(server, token=scraper).json()["Gauges"]
    finally:
        server.stop()


def test_unauthenticated_metrics_access_serves_without_a_token_even_sealed(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, OPEN_CONFIG, workdir)
    try:
        # Not even initialised: the listener still serves the node's own metrics, as OpenBao's does.
        sealed = families(server)
        assert [s.value for s in sealed["vault_core_unsealed"].samples] == [0]
        root = init_and_unseal(server)
        assert [s.value for s in families(server)["vault_core_unsealed"].samples] == [1]
        assert scrape(server).json()["Samples"]
        # A token is not needed, but one that is sent does no harm.
        assert scrape(server, token=root).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("text, message", [
    ('listener "tcp" {\n address = "127.0.0.1:1"\n tls_disable = true\n telemetry {\n unauthenticated = true\n }\n}\n',
     'unknown key "unauthenticated" in listener "tcp" telemetry (known: unauthenticated_metrics_access)'),
    ('telemetry {\n statsd_address = "x"\n}\n',
     'unknown key "statsd_address" in telemetry (known: prometheus_retention_time, disable_hostname)'),
    ('telemetry {\n prometheus_retention_time = "soon"\n}\n', '"prometheus_retention_time" must be a duration'),
])
def test_telemetry_configuration_errors_name_the_key(cofferd_bin, workdir, text, message):
    path = os.path.join(workdir, "bad.hcl")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([cofferd_bin, f"-config={path}"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr


def test_an_audit_device_that_cannot_write_is_counted(cofferd_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    try:
        logs = os.path.join(workdir, "logs")
        os.mkdir(logs)
        device = {"type": "file", "options": {"file_path": os.path.join(logs, "audit.log")}}
        assert v1(server, "PUT", "sys/audit/file", json=device).status_code == 204
        before = sample(families(server), "vault_audit_log_request_failure")
        shutil.rmtree(logs)
        r = v1(server, "POST", "secret/data/refused", json={"data": {"a": "b"}})
        assert r.status_code == 500 and "no audit device could record the request" in r.text
        assert sample(families(server), "vault_audit_log_request_failure") == before + 1
    finally:
        server.stop()


# ---- The seeds' REST contract -------------------------------------------------------------------------


def alias(server, method, path, token="root", bearer=False, **kw):
    headers = {}
    if token:
        headers = {"Authorization": f"Bearer {token}"} if bearer else {"X-Vault-Token": token}
    return requests.request(method, f"{server.addr}{path}", headers=headers, timeout=10, **kw)


def test_rest_alias_put_get_rotate_health(cofferd_dev):
    secret = {"username": "admin", "password": "secure123"}
    r = alias(cofferd_dev, "PUT", "/api/v1/secrets/database/postgres", bearer=True, json=secret)
    assert r.status_code == 200 and r.json()["data"]["version"] >= 1
    version = r.json()["data"]["version"]
    # The same secret through the alias (Bearer and X-Vault-Token alike) and through the Vault API.
    for bearer in (True, False):
        got = alias(cofferd_dev, "GET", "/api/v1/secrets/database/postgres", bearer=bearer)
        assert got.status_code == 200 and got.json()["data"]["data"] == secret
        assert got.json()["data"]["metadata"]["version"] == version
    assert v1(cofferd_dev, "GET", "secret/data/database/postgres").json()["data"]["data"] == secret
    # KV v2's query parameters pass through: an earlier version.
    alias(cofferd_dev, "PUT", "/api/v1/secrets/database/postgres", json={"password": "second"})
    old = alias(cofferd_dev, "GET", f"/api/v1/secrets/database/postgres?version={version}")
    assert old.json()["data"]["data"] == secret

    # Rotation (docs/rotation.md): POST .../rotate is secret/rotate/{path}; without a policy, a 400 naming it.
    r = alias(cofferd_dev, "POST", "/api/v1/secrets/database/postgres/rotate")
    assert r.status_code == 400
    assert r.json()["errors"] == [
        "no rotation policy for secret/database/postgres; write secret/rotation/database/postgres first"
    ]

    health = alias(cofferd_dev, "GET", "/health", token=None)
    assert health.status_code == 200
    assert set(health.json()) == set(v1(cofferd_dev, "GET", "sys/health", token=None).json())
    assert health.json()["sealed"] is False
    assert alias(cofferd_dev, "GET", "/health?standbyok=true&activecode=299", token=None).status_code == 299


def test_rest_alias_errors_are_the_apis(cofferd_dev):
    r = alias(cofferd_dev, "GET", "/api/v1/secrets/database/postgres", token="not-a-token")
    assert r.status_code == 403 and r.json() == {"errors": ["permission denied"]}
    assert alias(cofferd_dev, "GET", "/api/v1/secrets/database/postgres", token=None).status_code == 403
    r = alias(cofferd_dev, "GET", "/api/v1/secrets/never/written")
    assert r.status_code == 404 and r.json() == {"errors": []}
    r = alias(cofferd_dev, "PUT", "/api/v1/secrets/bad", data=b"[1, 2]")
    assert r.status_code == 400 and "a JSON object" in r.json()["errors"][0]
    r = alias(cofferd_dev, "PUT", "/api/v1/secrets/bad", data=b"{not json")
    assert r.status_code == 400 and r.json()["errors"][0].startswith("failed to parse JSON input")
    assert alias(cofferd_dev, "DELETE", "/api/v1/secrets/database/postgres").status_code == 405
    assert alias(cofferd_dev, "GET", "/api/v1/other").status_code == 404
    r = alias(cofferd_dev, "POST", "/api/v1/auth/login", token=None, json={"password": "x"})
    assert r.status_code == 400 and '"method" is required' in r.json()["errors"][0]


def test_rest_alias_login_with_userpass_and_approle(cofferd_dev):
    assert v1(cofferd_dev, "POST", "sys/auth/userpass", json={"type": "userpass"}).status_code == 204
    policy = 'path "secret/data/team/*" { capabilities = ["read", "create", "update"] }'
    assert v1(cofferd_dev, "PUT", "sys/policies/acl/team", json={"policy": policy}).status_code == 204
    assert v1(cofferd_dev, "POST", "auth/userpass/users/ana", json={"password": "pw", "policies": "team"}).status_code == 204
    r = alias(cofferd_dev, "POST", "/api/v1/auth/login", token=None,
              json={"method": "userpass", "username": "ana", "password": "pw"})
    assert r.status_code == 200, r.text
    token = r.json()["auth"]["client_token"]
    assert r.json()["auth"]["policies"] == ["default", "team"]
    # The token works on the alias within its policy, and not beyond it.
    assert alias(cofferd_dev, "PUT", "/api/v1/secrets/team/app", token=token, bearer=True, json={"k": "v"}).status_code == 200
    assert alias(cofferd_dev, "GET", "/api/v1/secrets/team/app", token=token).json()["data"]["data"] == {"k": "v"}
    assert alias(cofferd_dev, "GET", "/api/v1/secrets/database/postgres", token=token).status_code == 403
    # A wrong password is the auth method's own answer.
    r = alias(cofferd_dev, "POST", "/api/v1/auth/login", token=None,
              json={"method": "userpass", "username": "ana", "password": "no"})
    assert r.status_code == 400 and r.json() == {"errors": ["invalid username or password"]}

    # AppRole mounted at another path: "mount" names it.
    assert v1(cofferd_dev, "POST", "sys/auth/machines", json={"type": "approle"}).status_code == 204
    assert v1(cofferd_dev, "POST", "auth/machines/role/web", json={"token_policies": "team"}).status_code == 204
    role_id = v1(cofferd_dev, "GET", "auth/machines/role/web/role-id").json()["data"]["role_id"]
    secret_id = v1(cofferd_dev, "POST", "auth/machines/role/web/secret-id").json()["data"]["secret_id"]
    r = alias(cofferd_dev, "POST", "/api/v1/auth/login", token=None,
              json={"method": "approle", "mount": "machines", "role_id": role_id, "secret_id": secret_id})
    assert r.status_code == 200, r.text
    assert "team" in r.json()["auth"]["policies"]


def test_rest_alias_requests_are_audited_under_the_api_path(cofferd_bin, workdir):
    server = start_cofferd_dev(cofferd_bin)
    try:
        log = os.path.join(workdir, "audit.log")
        device = {"type": "file", "options": {"file_path": log}}
        assert v1(server, "PUT", "sys/audit/file", json=device).status_code == 204
        assert alias(server, "PUT", "/api/v1/secrets/audited/one", json={"v": "hidden-value"}).status_code == 200
        assert alias(server, "GET", "/api/v1/secrets/audited/one").status_code == 200
        # A read's records reach the file from the device's writer thread, within about a millisecond.
        deadline = time.monotonic() + 5
        while True:
            with open(log) as f:
                records = [json.loads(line) for line in f if line.strip()]
            paths = [(r["type"], r["request"]["operation"], r["request"]["path"]) for r in records]
            if ("response", "read", "secret/data/audited/one") in paths or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert ("response", "create", "secret/data/audited/one") in paths
        assert ("response", "read", "secret/data/audited/one") in paths
        assert "hidden-value" not in open(log).read()
    finally:
        server.stop()
