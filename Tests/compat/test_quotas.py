"""Rate-limit quotas (issue 19 item 2) with the unmodified bao CLI, hvac and raw HTTP, against OpenBao
2.7.2's observed behaviour (/work/shared/design/AUTH-HA-OPS.md §5).

The tests parametrized over KINDS run the same requests against `bao server -dev` (the reference) and
`cofferd -dev` and expect the same answers, except where Coffer differs on purpose (docs/quotas.md):
headers on by default, several windows on one path, per-client buckets, lease-count quotas. Those are
asserted per kind, or against cofferd only.
"""
import time

import hvac
import pytest

from authtools import KINDS, Cli, enable_auth, error, login, server_param, start

RATE_HEADERS = ["X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"]
DEFAULT_EXEMPT = ["sys/generate-recovery-token/attempt", "sys/generate-recovery-token/update", "sys/generate-root/attempt",
                  "sys/generate-root/update", "sys/health", "sys/seal-status", "sys/unseal"]


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    yield api
    api.close()


@pytest.fixture
def clean(srv):
    """Deletes every quota and restores the default config after a test (the test's quotas could
    otherwise limit the next one)."""
    yield srv
    for kind in ("rate-limit", "lease-count") if srv.kind == "cofferd" else ("rate-limit",):
        for name in srv.keys(f"sys/quotas/{kind}"):
            srv.ok("DELETE", f"sys/quotas/{kind}/{name}", status=204)
    srv.ok("POST", "sys/quotas/config", {"enable_rate_limit_audit_logging": False,
                                         "enable_rate_limit_response_headers": srv.kind == "cofferd",
                                         "rate_limit_exempt_paths": DEFAULT_EXEMPT}, status=204)


def headers_on(api):
    api.ok("POST", "sys/quotas/config", {"enable_rate_limit_response_headers": True}, status=204)


def rate_headers(r):
    return {name: r.headers.get(name) for name in RATE_HEADERS + ["Retry-After"] if name in r.headers}


def test_config_defaults_and_the_exempt_list_is_replaced(srv, clean):
    data = srv.data("GET", "sys/quotas/config")
    assert data["enable_rate_limit_audit_logging"] is False
    assert data["rate_limit_exempt_paths"] == DEFAULT_EXEMPT, data
    # Coffer sends the headers by default; OpenBao does not (docs/quotas.md).
    assert data["enable_rate_limit_response_headers"] is (srv.kind == "cofferd"), data
    srv.ok("POST", "sys/quotas/config", {"enable_rate_limit_response_headers": True,
                                         "rate_limit_exempt_paths": ["sys/health"]}, status=204)
    data = srv.data("GET", "sys/quotas/config")
    assert data["rate_limit_exempt_paths"] == ["sys/health"] and data["enable_rate_limit_response_headers"] is True


def test_cli_writes_reads_lists_and_deletes_a_quota(srv, clean):
    cli = Cli(srv.bao_bin, srv.addr)
    try:
        _, out, _ = cli("write", "sys/quotas/rate-limit/kvq", "rate=3", "interval=10s", "block_interval=20s",
                        "path=cubbyhole", token="root")
        assert "Success! Data written to: sys/quotas/rate-limit/kvq" in out, out
        data = cli.json("read", "sys/quotas/rate-limit/kvq", token="root")["data"]
        expected = {"block_interval": 20, "inheritable": False, "interval": 10, "name": "kvq", "path": "cubbyhole/",
                    "rate": 3, "role": "", "type": "rate-limit"}
        if srv.kind == "cofferd":
            assert data.pop("key_by") == "client_address", data
        assert data == expected, (srv.kind, data)
        cli("write", "sys/quotas/rate-limit/g", "rate=100", token="root")
        g = cli.json("read", "sys/quotas/rate-limit/g", token="root")["data"]
        assert g["path"] == "" and g["inheritable"] is True and g["interval"] == 1, g
        listed = cli.json("list", "sys/quotas/rate-limit", token="root")
        assert sorted(listed) == ["g", "kvq"], listed  # OpenBao lists in its memdb order
        _, out, _ = cli("delete", "sys/quotas/rate-limit/kvq", token="root")
        assert "Success! Data deleted (if it existed) at: sys/quotas/rate-limit/kvq" in out, out
        code, _, err = cli("read", "sys/quotas/rate-limit/kvq", token="root", check=False)
        assert code == 2 and "No value found at sys/quotas/rate-limit/kvq" in err, (code, err)
    finally:
        cli.close()


def test_hvac_creates_reads_and_lists_quotas(srv, clean):
    client = hvac.Client(url=srv.addr, token="root")
    client.sys.create_or_update_quota(name="hv", rate=7.0, path="sys/", interval="5s")
    data = client.sys.read_quota(name="hv")["data"]
    assert data["rate"] == 7 and data["interval"] == 5 and data["path"] == "sys/", data
    assert client.sys.list_quotas()["data"]["keys"] == ["hv"]
    client.sys.delete_quota(name="hv")


@pytest.mark.parametrize("body,message", [
    ({"rate": 0}, "'rate' is invalid"),
    ({"rate": -2}, "'rate' is invalid"),
    ({"rate": 1, "path": "nonexist/"}, 'invalid mount path "nonexist/"'),
    ({"rate": 1, "path": "cubbyhole/", "role": "web"},
     'Mount path "cubbyhole/" is not a valid auth method and therefore unsuitable for use with role-based quotas'),
    ({"rate": 1, "role": "web"},
     'Mount path "" is not a valid auth method and therefore unsuitable for use with role-based quotas'),
    ({"rate": 1, "path": "auth/token/create", "role": "web"},
     "Quotas cannot contain both a path suffix and a role. If a role is provided, path must be a valid auth mount "
     "with a concept of roles"),
])
def test_bad_quotas_are_refused_with_openbaos_errors(srv, clean, body, message):
    assert error(srv, "POST", "sys/quotas/rate-limit/bad", body) == (400, message)
    assert srv.keys("sys/quotas/rate-limit") == []


def test_a_second_window_on_a_path_is_allowed_in_coffer_only(srv, clean):
    srv.ok("POST", "sys/quotas/rate-limit/q1", {"rate": 5, "path": "cubbyhole/"}, status=204)
    similar = 'quota rule with similar properties exists under the name "q1"'
    # An exact twin is refused by both.
    assert error(srv, "POST", "sys/quotas/rate-limit/q2", {"rate": 5, "path": "cubbyhole/"}) == (400, similar)
    code, parsed = srv("POST", "sys/quotas/rate-limit/q2", {"rate": 50, "interval": "1m", "path": "cubbyhole/"})
    if srv.kind == "openbao":
        assert (code, parsed["errors"]) == (400, [similar]), parsed
    else:
        assert code == 204, parsed


def burst(api, n, method="GET", path="cubbyhole/x"):
    return [api.raw(method, path) for _ in range(n)]


def test_the_429_body_and_headers(srv, clean):
    headers_on(srv)
    srv.ok("POST", "cubbyhole/x", {"v": "1"}, status=204)
    srv.ok("POST", "sys/quotas/rate-limit/kvq", {"rate": 5, "interval": "10s", "path": "cubbyhole/"}, status=204)
    answers = burst(srv, 6)
    for i, r in enumerate(answers[:5]):
        assert r.status_code == 200, (srv.kind, i, r.text)
        h = rate_headers(r)
        assert h["X-Ratelimit-Limit"] == "5" and h["X-Ratelimit-Remaining"] == str(4 - i), (srv.kind, h)
        assert int(h["X-Ratelimit-Reset"]) in (8, 9) and "Retry-After" not in h, (srv.kind, h)
    refused = answers[5]
    assert refused.status_code == 429, (srv.kind, refused.text)
    assert refused.json() == {"errors": ['request path "cubbyhole/x": rate limit quota exceeded']}
    assert refused.headers["Content-Type"] == "application/json"
    h = rate_headers(refused)
    assert h["X-Ratelimit-Remaining"] == "0" and h["X-Ratelimit-Limit"] == "5", h
    assert h["Retry-After"] == h["X-Ratelimit-Reset"], h
    # Other paths are not under the quota and carry no X-Ratelimit headers.
    assert not rate_headers(srv.raw("GET", "sys/mounts"))
    # The bao CLI shows the 429 (without retrying: its client would honour Retry-After and try again).
    cli = Cli(srv.bao_bin, srv.addr)
    try:
        code, _, err = cli("read", "cubbyhole/x", token="root", check=False, env={"BAO_MAX_RETRIES": "0"})
        assert code == 2 and "Code: 429" in err and "rate limit quota exceeded" in err, (srv.kind, code, err)
    finally:
        cli.close()


def test_block_interval_sends_only_retry_after_while_blocked(srv, clean):
    headers_on(srv)
    srv.ok("POST", "cubbyhole/b", {"v": "1"}, status=204)
    srv.ok("POST", "sys/quotas/rate-limit/blk", {"rate": 1, "interval": "10s", "block_interval": "20s",
                                                  "path": "cubbyhole/b"}, status=204)
    first, second, third = burst(srv, 3, path="cubbyhole/b")
    assert first.status_code == 200, first.text
    assert second.status_code == 429 and rate_headers(second)["Retry-After"] == "19", rate_headers(second)
    assert set(rate_headers(second)) == set(RATE_HEADERS + ["Retry-After"]), rate_headers(second)
    assert third.status_code == 429, third.text
    assert set(rate_headers(third)) == {"Retry-After"} and int(third.headers["Retry-After"]) in (18, 19), \
        rate_headers(third)


def test_without_headers_a_429_has_no_retry_after(srv, clean):
    srv.ok("POST", "sys/quotas/config", {"enable_rate_limit_response_headers": False}, status=204)
    srv.ok("POST", "cubbyhole/q", {"v": "1"}, status=204)
    srv.ok("POST", "sys/quotas/rate-limit/quiet", {"rate": 1, "interval": "10s", "path": "cubbyhole/q"}, status=204)
    ok, refused = burst(srv, 2, path="cubbyhole/q")
    assert ok.status_code == 200 and not rate_headers(ok)
    assert refused.status_code == 429 and not rate_headers(refused), dict(refused.headers)


def test_a_global_quota_limits_the_root_token_and_sys_quotas_but_not_exempt_paths(srv, clean):
    srv.ok("POST", "sys/quotas/rate-limit/g", {"rate": 2, "interval": "3s"}, status=204)
    deadline = time.monotonic() + 10
    while srv.raw("GET", "sys/mounts").status_code != 429:
        assert time.monotonic() < deadline
    assert error(srv, "POST", "sys/quotas/rate-limit/g", {"rate": 1000}) == (
        429, 'request path "sys/quotas/rate-limit/g": rate limit quota exceeded')
    assert srv.raw("GET", "sys/seal-status").status_code == 200
    assert srv.raw("GET", "sys/health").status_code == 200
    time.sleep(3.1)  # the window ends; the cleanup can get through


def test_a_role_quota_limits_that_roles_approle_logins(srv, clean):
    enable_auth(srv, "approle", "qa")
    creds = {}
    for role in ("web", "batch"):
        srv.ok("POST", f"auth/qa/role/{role}", {"token_ttl": "5m"}, status=204)
        role_id = srv.data("GET", f"auth/qa/role/{role}/role-id")["role_id"]
        secret_id = srv.data("POST", f"auth/qa/role/{role}/secret-id")["secret_id"]
        creds[role] = {"role_id": role_id, "secret_id": secret_id}
    srv.ok("POST", "sys/quotas/rate-limit/web", {"rate": 2, "interval": "10s", "path": "auth/qa", "role": "web"},
           status=204)
    assert srv.data("GET", "sys/quotas/rate-limit/web")["path"] == "auth/qa/"
    codes = [login(srv, "auth/qa/login", creds["web"])[0] for _ in range(3)]
    assert codes == [200, 200, 429], (srv.kind, codes)
    code, parsed = login(srv, "auth/qa/login", creds["web"])
    assert parsed == {"errors": ['request path "auth/qa/login": rate limit quota exceeded']}, parsed
    assert [login(srv, "auth/qa/login", creds["batch"])[0] for _ in range(3)] == [200, 200, 200]


# ---- Coffer only ----

@pytest.fixture(scope="module")
def coffer(bao_bin, cofferd_bin):
    api = start("cofferd", bao_bin, cofferd_bin)
    yield api
    api.close()


def test_coffer_sends_the_headers_by_default(coffer):
    coffer.ok("POST", "cubbyhole/d", {"v": "1"}, status=204)
    coffer.ok("POST", "sys/quotas/rate-limit/d", {"rate": 3, "interval": "10s", "path": "cubbyhole/d"}, status=204)
    r = coffer.raw("GET", "cubbyhole/d")
    assert r.status_code == 200 and rate_headers(r)["X-Ratelimit-Remaining"] == "2", rate_headers(r)
    coffer.ok("DELETE", "sys/quotas/rate-limit/d", status=204)


def test_coffer_burst_and_sustained_windows_both_apply(coffer):
    coffer.ok("POST", "cubbyhole/w", {"v": "1"}, status=204)
    coffer.ok("POST", "sys/quotas/rate-limit/burst", {"rate": 3, "interval": "1s", "path": "cubbyhole/w"}, status=204)
    coffer.ok("POST", "sys/quotas/rate-limit/sustained", {"rate": 4, "interval": "1m", "path": "cubbyhole/w"},
              status=204)
    codes = [r.status_code for r in burst(coffer, 4, path="cubbyhole/w")]
    assert codes == [200, 200, 200, 429], codes
    time.sleep(1.05)
    answers = burst(coffer, 2, path="cubbyhole/w")
    assert [r.status_code for r in answers] == [200, 429], [r.text for r in answers]
    # The minute window refused: Retry-After is close to a minute.
    assert 50 <= int(answers[1].headers["Retry-After"]) <= 58, rate_headers(answers[1])
    assert answers[1].headers["X-Ratelimit-Limit"] == "4"
    for name in ("burst", "sustained"):
        coffer.ok("DELETE", f"sys/quotas/rate-limit/{name}", status=204)


def test_coffer_shared_and_entity_keys_and_lease_count_quotas(coffer):
    coffer.ok("POST", "sys/quotas/rate-limit/k", {"rate": 1, "path": "cubbyhole/", "key_by": "entity"}, status=204)
    assert coffer.data("GET", "sys/quotas/rate-limit/k")["key_by"] == "entity"
    assert error(coffer, "POST", "sys/quotas/rate-limit/k2", {"rate": 1, "key_by": "ip"})[0] == 400
    coffer.ok("DELETE", "sys/quotas/rate-limit/k", status=204)
    coffer.ok("POST", "sys/quotas/lease-count/lc", {"max_leases": 10, "path": "sys/"}, status=204)
    data = coffer.data("GET", "sys/quotas/lease-count/lc")
    assert data == {"name": "lc", "path": "sys/", "role": "", "type": "lease-count", "max_leases": 10,
                    "inheritable": False, "counter": 0}, data
    assert coffer.keys("sys/quotas/lease-count") == ["lc"]
    coffer.ok("DELETE", "sys/quotas/lease-count/lc", status=204)


def test_coffer_metrics_count_violations(coffer):
    coffer.ok("POST", "cubbyhole/m", {"v": "1"}, status=204)
    coffer.ok("POST", "sys/quotas/rate-limit/metq", {"rate": 1, "interval": "10s", "path": "cubbyhole/m"}, status=204)
    assert [r.status_code for r in burst(coffer, 2, path="cubbyhole/m")] == [200, 429]
    text = coffer.raw("GET", "sys/metrics?format=prometheus").text
    assert 'vault_quota_rate_limit_violation{name="metq"} 1' in text, [l for l in text.splitlines() if "quota" in l]
    coffer.ok("DELETE", "sys/quotas/rate-limit/metq", status=204)
