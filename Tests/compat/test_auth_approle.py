"""AppRole (issue 17 item 1) with the unmodified bao CLI, hvac and raw HTTP, against OpenBao 2.7.2's
observed behaviour (/work/shared/design/AUTH-HA-OPS.md §1).

Every test runs against `bao server -dev` (the reference: it shows the assertion is what OpenBao does)
and against `cofferd -dev`; the same requests and the same expected answers, so each pair is a
differential test. The last tests also compare the two servers' answers shape for shape.
"""
import concurrent.futures
import json
import re

import hvac
import pytest
import requests
from hvac import exceptions

from authtools import (assert_same_as_openbao, INVALID_SECRET_ID, KINDS, NOT_VALID_WRAPPING, Cli, as_client, check_auth_block,
                       enable_auth, error, kv_put, login, login_ok, put_policy, server_param)

APP_POLICY = 'path "secret/data/app/*" { capabilities = ["read"] }\n'
CREATOR_POLICY = 'path "auth/token/create" { capabilities = ["update"] }\n'


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    put_policy(api, "app", APP_POLICY)
    put_policy(api, "creator", CREATOR_POLICY)
    kv_put(api, "app/db", {"password": "db-pass-allowed"})
    kv_put(api, "other/db", {"password": "db-pass-forbidden"})
    yield api
    api.close()


# ---- The issue's "done when", as an operator types it ----

def test_done_when_wrapped_secret_id_login_and_policy_with_the_bao_cli(srv):
    cli = Cli(srv.bao_bin, srv.addr)
    try:
        _, out, _ = cli("auth", "enable", "approle", token="root")
        assert "Success! Enabled approle auth method at: approle/" in out, out
        _, out, _ = cli("write", "auth/approle/role/x", "token_policies=app", "secret_id_num_uses=1", "token_ttl=10m",
                        token="root")
        assert "Success! Data written to: auth/approle/role/x" in out, out
        _, out, _ = cli("read", "-field=role_id", "auth/approle/role/x/role-id", token="root")
        role_id = out.strip()
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", role_id), out

        wrapped = cli.json("write", "-wrap-ttl=60s", "-f", "auth/approle/role/x/secret-id", token="root")
        info = wrapped["wrap_info"]
        assert wrapped["data"] is None and info["ttl"] == 60, wrapped
        assert info["creation_path"] == "auth/approle/role/x/secret-id", info
        assert info["token"] and info["wrapped_accessor"], info

        unwrapped = cli.json("unwrap", info["token"], token="root")
        secret_id = unwrapped["data"]["secret_id"]
        assert unwrapped["data"]["secret_id_accessor"] == info["wrapped_accessor"], (unwrapped, info)
        assert unwrapped["data"]["secret_id_num_uses"] == 1, unwrapped
        code, _, err = cli("unwrap", info["token"], token="root", check=False)
        assert code == 2 and NOT_VALID_WRAPPING in err, err  # single use

        logged_in = cli.json("write", "auth/approle/login", f"role_id={role_id}", f"secret_id={secret_id}")
        auth = logged_in["auth"]
        assert auth["client_token"].startswith("s.") and auth["policies"] == ["app", "default"], auth
        assert auth["metadata"] == {"role_name": "x"} and auth["lease_duration"] == 600, auth
        token = auth["client_token"]

        _, out, _ = cli("kv", "get", "-field=password", "secret/app/db", token=token)
        assert out.strip() == "db-pass-allowed"
        code, out, err = cli("kv", "get", "secret/other/db", token=token, check=False)
        assert code == 2 and "Code: 403" in err and "permission denied" in err, (out, err)
        assert "db-pass-forbidden" not in out + err

        # The secret id was single use.
        code, _, err = cli("write", "auth/approle/login", f"role_id={role_id}", f"secret_id={secret_id}", check=False)
        assert code == 2 and "Code: 400" in err and INVALID_SECRET_ID in err, err
    finally:
        cli.close()


# ---- hvac ----

def test_hvac_role_secret_ids_login_lookup_and_destroy(srv):
    client = hvac.Client(url=srv.addr, token="root")
    client.sys.enable_auth_method("approle", path="hv-approle")
    client.auth.approle.create_or_update_approle("web", token_policies=["app"], token_ttl="1h", token_max_ttl="4h",
                                                 secret_id_num_uses=5, secret_id_ttl="10m", mount_point="hv-approle")
    role = client.auth.approle.read_role("web", mount_point="hv-approle")["data"]
    assert role["token_ttl"] == 3600 and role["token_max_ttl"] == 14400 and role["secret_id_ttl"] == 600, role
    assert client.auth.approle.list_roles(mount_point="hv-approle")["data"]["keys"] == ["web"]
    role_id = client.auth.approle.read_role_id("web", mount_point="hv-approle")["data"]["role_id"]
    generated = client.auth.approle.generate_secret_id("web", metadata={"app": "web", "env": "dev"},
                                                       mount_point="hv-approle")["data"]
    assert sorted(generated) == ["secret_id", "secret_id_accessor", "secret_id_num_uses", "secret_id_ttl"], generated
    assert generated["secret_id_num_uses"] == 5 and generated["secret_id_ttl"] == 600, generated
    secret_id, accessor = generated["secret_id"], generated["secret_id_accessor"]

    looked = client.auth.approle.read_secret_id("web", secret_id, mount_point="hv-approle")["data"]
    keys = ["cidr_list", "creation_time", "expiration_time", "last_updated_time", "metadata", "secret_id_accessor",
            "secret_id_num_uses", "secret_id_ttl", "token_bound_cidrs"]
    if srv.kind == "cofferd":
        # Coffer adds when the secret id was last used (AUTH-HA-OPS.md §9 item 3: OpenBao has no "last used").
        assert looked.pop("last_used_time") is None, looked
    assert sorted(looked) == keys, looked
    assert looked["metadata"] == {"app": "web", "env": "dev"} and looked["secret_id_accessor"] == accessor, looked
    assert looked["secret_id_num_uses"] == 5 and looked["cidr_list"] == [] and looked["token_bound_cidrs"] == []
    by_accessor = client.auth.approle.read_secret_id_accessor("web", accessor, mount_point="hv-approle")["data"]
    by_accessor.pop("last_used_time", None) if srv.kind == "cofferd" else None
    assert by_accessor == looked, (by_accessor, looked)
    assert client.auth.approle.list_secret_id_accessors("web", mount_point="hv-approle")["data"]["keys"] == [accessor]

    login_client = hvac.Client(url=srv.addr)
    answer = login_client.auth.approle.login(role_id, secret_id, mount_point="hv-approle")
    check_auth_block(answer)
    auth = answer["auth"]
    assert auth["policies"] == ["app", "default"] and auth["token_policies"] == ["app", "default"], auth
    # The secret id's metadata joins the token's.
    meta = {"app": "web", "env": "dev", "role_name": "web"}
    assert auth["metadata"] == meta and auth["lease_duration"] == 3600 and auth["renewable"] is True
    assert auth["token_type"] == "service" and auth["num_uses"] == 0 and auth["entity_id"], auth
    assert login_client.token == auth["client_token"]
    self_ = login_client.auth.token.lookup_self()["data"]
    assert self_["path"] == "auth/hv-approle/login" and self_["meta"] == meta, self_
    assert self_["display_name"] == "hv-approle" and self_["orphan"] is True and self_["entity_id"] == auth["entity_id"]
    assert login_client.auth.token.renew_self(increment="2h")["auth"]["lease_duration"] == 7200
    assert login_client.secrets.kv.v2.read_secret_version("app/db", raise_on_deleted_version=True)["data"]["data"] == \
        {"password": "db-pass-allowed"}
    with pytest.raises(exceptions.Forbidden):
        login_client.secrets.kv.v2.read_secret_version("other/db", raise_on_deleted_version=True)

    # One use spent: the remaining count is what lookup shows.
    after = client.auth.approle.read_secret_id("web", secret_id, mount_point="hv-approle")["data"]
    assert after["secret_id_num_uses"] == 4 and after["creation_time"] == looked["creation_time"], after
    if srv.kind == "cofferd":
        assert isinstance(after.pop("last_used_time"), str), after

    # Destroyed by accessor: login refused with the one string, lookup answers 204 (not 404).
    client.auth.approle.destroy_secret_id_accessor("web", accessor, mount_point="hv-approle")
    with pytest.raises(exceptions.InvalidRequest) as refused:
        hvac.Client(url=srv.addr).auth.approle.login(role_id, secret_id, mount_point="hv-approle")
    assert refused.value.errors == [INVALID_SECRET_ID]
    r = srv.raw("POST", "auth/hv-approle/role/web/secret-id/lookup", {"secret_id": secret_id})
    assert r.status_code == 204 and r.content == b"", (r.status_code, r.text)

    # Destroy by secret id.
    second = client.auth.approle.generate_secret_id("web", mount_point="hv-approle")["data"]["secret_id"]
    client.auth.approle.destroy_secret_id("web", second, mount_point="hv-approle")
    assert login(srv, "auth/hv-approle/login", {"role_id": role_id, "secret_id": second})[0] == 400
    code, message = error(srv, "POST", "auth/hv-approle/role/web/secret-id-accessor/destroy",
                          {"secret_id_accessor": "nonexistent"})
    assert (code, message) == (500, 'failed to find accessor entry for secret_id_accessor: "nonexistent"')

    # A custom secret id.
    custom = srv.data("POST", "auth/hv-approle/role/web/custom-secret-id", {"secret_id": "my-custom-secret-web"})
    assert custom["secret_id"] == "my-custom-secret-web" and custom["secret_id_num_uses"] == 5, custom
    assert login_ok(srv, "auth/hv-approle/login", {"role_id": role_id, "secret_id": "my-custom-secret-web"})["policies"] \
        == ["app", "default"]


# ---- Roles ----

def test_role_read_defaults_errors_and_custom_role_id(srv):
    enable_auth(srv, "approle", "ar-roles")
    srv.ok("POST", "auth/ar-roles/role/min", {"token_policies": ["app"], "secret_id_num_uses": 1}, status=204)
    role = srv.data("GET", "auth/ar-roles/role/min")
    assert role == {"bind_secret_id": True, "local_secret_ids": False, "secret_id_bound_cidrs": None,
                    "secret_id_num_uses": 1, "secret_id_ttl": 0, "token_bound_cidrs": [], "token_explicit_max_ttl": 0,
                    "token_max_ttl": 0, "token_no_default_policy": False, "token_num_uses": 0, "token_period": 0,
                    "token_policies": ["app"], "token_strictly_bind_ip": False, "token_ttl": 0,
                    "token_type": "default"}, role
    srv.ok("POST", "auth/ar-roles/role/full", {"token_policies": ["app1", "default"], "token_ttl": "1h", "token_max_ttl": "4h",
                                               "secret_id_ttl": "10m", "secret_id_num_uses": 5, "bind_secret_id": True,
                                               "secret_id_bound_cidrs": ["127.0.0.0/8"]}, status=204)
    full = srv.data("GET", "auth/ar-roles/role/full")
    assert (full["token_ttl"], full["token_max_ttl"], full["secret_id_ttl"]) == (3600, 14400, 600), full
    assert full["secret_id_bound_cidrs"] == ["127.0.0.0/8"] and full["token_policies"] == ["app1", "default"]
    assert srv.data("LIST", "auth/ar-roles/role")["keys"] == ["full", "min"]
    assert srv.data("GET", "auth/ar-roles/role/full/secret-id-num-uses") == {"secret_id_num_uses": 5}

    # Unknown role: 404 with an empty error list; secret-id for it names the role.
    assert srv("GET", "auth/ar-roles/role/nope") == (404, {"errors": []})
    assert srv("GET", "auth/ar-roles/role/nope/role-id") == (404, {"errors": []})
    assert error(srv, "POST", "auth/ar-roles/role/nope/secret-id") == (404, 'role "nope" does not exist')
    # A role without any constraint.
    assert error(srv, "POST", "auth/ar-roles/role/open", {"bind_secret_id": False}) == \
        (500, "at least one constraint should be enabled on the role")

    # A custom role id, and bind_secret_id=false with a CIDR: login with the role id alone.
    srv.ok("POST", "auth/ar-roles/role/nosecret", {"bind_secret_id": False, "token_bound_cidrs": ["127.0.0.0/8"],
                                                   "token_policies": ["app"]}, status=204)
    srv.ok("POST", "auth/ar-roles/role/nosecret/role-id", {"role_id": "fixed-role-id-nosecret"}, status=204)
    assert srv.data("GET", "auth/ar-roles/role/nosecret/role-id") == {"role_id": "fixed-role-id-nosecret"}
    assert login_ok(srv, "auth/ar-roles/login", {"role_id": "fixed-role-id-nosecret"})["policies"] == ["app", "default"]

    srv.ok("DELETE", "auth/ar-roles/role/min", status=204)
    assert srv.data("LIST", "auth/ar-roles/role")["keys"] == ["full", "nosecret"]


def test_secret_id_limits_must_stay_inside_the_role(srv):
    enable_auth(srv, "approle", "ar-limits")
    srv.ok("POST", "auth/ar-limits/role/web", {"token_policies": ["app"], "secret_id_ttl": "10m", "secret_id_num_uses": 5,
                                               "secret_id_bound_cidrs": ["127.0.0.0/8"]}, status=204)
    p = "auth/ar-limits/role/web/secret-id"
    assert error(srv, "POST", p, {"ttl": "1h"}) == (400, "ttl cannot be longer than the role's secret_id_ttl")
    assert error(srv, "POST", p, {"num_uses": 10}) == (400, "num_uses cannot be higher than the role's secret_id_num_uses")
    assert error(srv, "POST", p, {"metadata": "notjson"}) == \
        (400, "failed to parse metadata: failed to parse the input: invalid <key,value> format")
    code, message = error(srv, "POST", p, {"cidr_list": ["10.0.0.0/8"]})
    assert code == 500 and message.startswith(
        'failed to verify subset relationship between CIDR blocks on the role ["127.0.0.0/8"] and CIDR blocks on the '
        'secret ID ["10.0.0.0/8"]'), message
    short = srv.data("POST", p, {"ttl": "30s", "num_uses": 2})
    assert short["secret_id_ttl"] == 30 and short["secret_id_num_uses"] == 2, short


# ---- Login refusals ----

def new_role(srv, mount, **role):
    enable_auth(srv, "approle", mount)
    srv.ok("POST", f"auth/{mount}/role/web", {"token_policies": ["app"], **role}, status=204)
    role_id = srv.data("GET", f"auth/{mount}/role/web/role-id")["role_id"]
    return role_id


def test_login_refusals_use_openbaos_strings(srv):
    role_id = new_role(srv, "ar-refuse")
    secret_id = srv.data("POST", "auth/ar-refuse/role/web/secret-id")["secret_id"]
    path = "auth/ar-refuse/login"
    assert error(srv, "POST", path, {"role_id": role_id, "secret_id": "wrong"}, token=None) == (400, INVALID_SECRET_ID)
    assert error(srv, "POST", path, {"role_id": "wrong", "secret_id": secret_id}, token=None) == (400, INVALID_SECRET_ID)
    assert error(srv, "POST", path, {"role_id": role_id}, token=None) == (400, "missing secret_id")
    assert error(srv, "POST", path, {"secret_id": secret_id}, token=None) == (500, "missing role_id")  # OpenBao's quirk
    # None of the refusals used the secret id up.
    assert login_ok(srv, path, {"role_id": role_id, "secret_id": secret_id})["metadata"] == {"role_name": "web"}


def test_num_uses_are_counted_down_and_exhausted(srv):
    role_id = new_role(srv, "ar-uses", secret_id_num_uses=2)
    secret_id = srv.data("POST", "auth/ar-uses/role/web/secret-id")["secret_id"]
    lookup = lambda: srv("POST", "auth/ar-uses/role/web/secret-id/lookup", {"secret_id": secret_id})
    assert lookup()[1]["data"]["secret_id_num_uses"] == 2
    login_ok(srv, "auth/ar-uses/login", {"role_id": role_id, "secret_id": secret_id})
    assert lookup()[1]["data"]["secret_id_num_uses"] == 1
    login_ok(srv, "auth/ar-uses/login", {"role_id": role_id, "secret_id": secret_id})
    assert lookup() == (204, None), lookup()  # deleted at zero
    assert error(srv, "POST", "auth/ar-uses/login", {"role_id": role_id, "secret_id": secret_id}, token=None) == \
        (400, INVALID_SECRET_ID)
    # A reused single-use secret id, the operators' pattern.
    srv.ok("POST", "auth/ar-uses/role/once", {"token_policies": ["app"], "secret_id_num_uses": 1}, status=204)
    once_role = srv.data("GET", "auth/ar-uses/role/once/role-id")["role_id"]
    once = srv.data("POST", "auth/ar-uses/role/once/secret-id")["secret_id"]
    login_ok(srv, "auth/ar-uses/login", {"role_id": once_role, "secret_id": once})
    assert error(srv, "POST", "auth/ar-uses/login", {"role_id": once_role, "secret_id": once}, token=None) == \
        (400, INVALID_SECRET_ID)


def test_use_counts_are_exact_under_concurrent_logins(srv):
    role_id = new_role(srv, "ar-race", secret_id_num_uses=5)
    secret_id = srv.data("POST", "auth/ar-race/role/web/secret-id")["secret_id"]

    def attempt(_):
        r = requests.post(f"{srv.addr}/v1/auth/ar-race/login", json={"role_id": role_id, "secret_id": secret_id}, timeout=30)
        return r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(24)))
    statuses = sorted(code for code, _ in results)
    # Exactly five logins; the others refused: 400 while the count of failures is low, then 403 once the
    # mount's user lockout (5 failures by default, OpenBao applies it to AppRole too) locks the role id.
    allowed = {(400, INVALID_SECRET_ID), (403, "permission denied")}
    if srv.kind == "openbao":
        # OpenBao's storage now and then refuses a racing login (seen here); Coffer may not answer 500.
        allowed.add((500, "transaction commit failed"))
    assert statuses.count(200) == 5, statuses
    refusals = {(code, body["errors"][0]) for code, body in results if code != 200}
    assert refusals <= allowed, refusals
    assert len({body["auth"]["client_token"] for code, body in results if code == 200}) == 5


def test_secret_id_ttl_expires(srv):
    import time
    role_id = new_role(srv, "ar-ttl", secret_id_ttl="10m")
    secret_id = srv.data("POST", "auth/ar-ttl/role/web/secret-id", {"ttl": "1s"})["secret_id"]
    time.sleep(2.2)
    assert error(srv, "POST", "auth/ar-ttl/login", {"role_id": role_id, "secret_id": secret_id}, token=None) == \
        (400, INVALID_SECRET_ID)


def test_cidr_outside_the_bound_list_is_refused(srv):
    # Bound to 10.0.0.0/8; the test logs in from 127.0.0.1.
    role_id = new_role(srv, "ar-cidr", secret_id_bound_cidrs=["10.0.0.0/8"])
    secret_id = srv.data("POST", "auth/ar-cidr/role/web/secret-id")["secret_id"]
    code, message = error(srv, "POST", "auth/ar-cidr/login", {"role_id": role_id, "secret_id": secret_id}, token=None)
    # OpenBao appends a Go formatting artefact (": %!w(<nil>)"); the sentence before it is what users read.
    assert code == 400 and message.startswith(
        'source address "127.0.0.1" unauthorized by CIDR restrictions on the role'), message
    # The same role, widened to loopback: the same secret id works (it was not used up by the refusal).
    srv.ok("POST", "auth/ar-cidr/role/web", {"secret_id_bound_cidrs": ["10.0.0.0/8", "127.0.0.1/32"]}, status=204)
    login_ok(srv, "auth/ar-cidr/login", {"role_id": role_id, "secret_id": secret_id})

    # A token bound to 10.0.0.0/8 by the role is refused when used from 127.0.0.1.
    srv.ok("POST", "auth/ar-cidr/role/tok", {"token_policies": ["app"], "token_bound_cidrs": ["10.0.0.0/8"]}, status=204)
    tok_role = srv.data("GET", "auth/ar-cidr/role/tok/role-id")["role_id"]
    tok_secret = srv.data("POST", "auth/ar-cidr/role/tok/secret-id")["secret_id"]
    # OpenBao issues the token, then refuses every use of it from outside the CIDR.
    token = login_ok(srv, "auth/ar-cidr/login", {"role_id": tok_role, "secret_id": tok_secret})["client_token"]
    assert as_client(srv, token)("GET", "secret/data/app/db") == (403, {"errors": ["permission denied"]})
    assert as_client(srv, token)("GET", "auth/token/lookup-self") == (403, {"errors": ["permission denied"]})


# ---- Batch tokens ----

def test_batch_token_role(srv):
    # "creator" allows auth/token/create: the refusal below is the batch token's, not the ACL's.
    role_id = new_role(srv, "ar-batch", token_type="batch", token_ttl="10m", token_policies=["app", "creator"])
    secret_id = srv.data("POST", "auth/ar-batch/role/web/secret-id")["secret_id"]
    auth = login_ok(srv, "auth/ar-batch/login", {"role_id": role_id, "secret_id": secret_id})
    assert auth["client_token"].startswith("b.") and auth["accessor"] == "", auth
    assert auth["token_type"] == "batch" and auth["renewable"] is False and auth["lease_duration"] == 600, auth
    batch = as_client(srv, auth["client_token"])
    assert batch("GET", "secret/data/app/db")[1]["data"]["data"] == {"password": "db-pass-allowed"}
    assert batch("GET", "secret/data/other/db")[0] == 403
    looked = batch.data("GET", "auth/token/lookup-self")
    assert looked["type"] == "batch" and looked["renewable"] is False and looked["accessor"] == "", looked
    code, message = error(batch, "POST", "auth/token/create", {"policies": ["app"]})
    assert code == 400 and message == "batch tokens cannot create more tokens", (code, message)
    code, message = error(batch, "POST", "auth/token/renew-self", {})
    assert code == 400 and message == "batch tokens cannot be renewed", (code, message)


# ---- Shapes, side by side ----

def dig(value, *keys):
    """value[k1][k2]…, or a placeholder dict/string when the server did not answer that (the sequence goes on)."""
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return value if value is not None else _Missing()


class _Missing(dict):
    def __missing__(self, key):
        return "missing"

    def __str__(self):
        return "missing"


def approle_sequence(api):
    """A fixed sequence; returns [(label, status, body)]."""
    out = []

    def call(label, method, path, body=None, token="default", headers=None):
        r = api.raw(method, path, body, token, headers)
        parsed = r.json() if r.content else None
        out.append((label, r.status_code, parsed))
        return parsed

    call("enable", "POST", "sys/auth/diff-approle", {"type": "approle"})
    call("role", "POST", "auth/diff-approle/role/web", {"token_policies": ["app"], "token_ttl": "1h", "secret_id_num_uses": 3})
    call("role read", "GET", "auth/diff-approle/role/web")
    role_id = dig(call("role-id", "GET", "auth/diff-approle/role/web/role-id"), "data", "role_id")
    generated = dig(call("secret-id", "POST", "auth/diff-approle/role/web/secret-id", {"metadata": '{"app":"web"}'}), "data")
    call("list secret ids", "LIST", "auth/diff-approle/role/web/secret-id")
    call("lookup", "POST", "auth/diff-approle/role/web/secret-id/lookup", {"secret_id": generated["secret_id"]})
    call("accessor lookup", "POST", "auth/diff-approle/role/web/secret-id-accessor/lookup",
         {"secret_id_accessor": generated["secret_id_accessor"]})
    call("wrapped secret-id", "POST", "auth/diff-approle/role/web/secret-id", headers={"X-Vault-Wrap-TTL": "60s"})
    auth = dig(call("login", "POST", "auth/diff-approle/login", {"role_id": role_id, "secret_id": generated["secret_id"]},
                    token=None), "auth")
    call("lookup-self", "GET", "auth/token/lookup-self", token=auth["client_token"])
    call("renew-self", "POST", "auth/token/renew-self", {"increment": "30m"}, token=auth["client_token"])
    call("entity", "GET", f"identity/entity/id/{auth['entity_id']}")
    call("bad login", "POST", "auth/diff-approle/login", {"role_id": role_id, "secret_id": "x"}, token=None)
    call("no role_id", "POST", "auth/diff-approle/login", {"secret_id": "x"}, token=None)
    call("unknown role", "GET", "auth/diff-approle/role/nope")
    call("destroy", "POST", "auth/diff-approle/role/web/secret-id/destroy", {"secret_id": generated["secret_id"]})
    call("lookup destroyed", "POST", "auth/diff-approle/role/web/secret-id/lookup", {"secret_id": generated["secret_id"]})
    return out


def test_same_shapes_as_openbao(bao_bin, cofferd_bin):
    def adjust(label, body):
        if label in ("lookup", "accessor lookup") and isinstance(body, dict) and isinstance(body.get("data"), dict):
            body["data"].pop("last_used_time", None)  # Coffer's addition (AUTH-HA-OPS.md §9 item 3)

    assert_same_as_openbao(bao_bin, cofferd_bin, approle_sequence, setup=lambda api: put_policy(api, "app", APP_POLICY),
                           adjust=adjust, auth_order=True)


def test_renewal_follows_the_role_and_stops_when_it_is_deleted(srv):
    enable_auth(srv, "approle", "ar-renew")
    srv.ok("POST", "auth/ar-renew/role/r", {"token_policies": ["app"], "token_ttl": "1h", "token_max_ttl": "2h"}, status=204)
    role_id = srv.data("GET", "auth/ar-renew/role/r/role-id")["role_id"]
    secret_id = srv.data("POST", "auth/ar-renew/role/r/secret-id")["secret_id"]
    token = login_ok(srv, "auth/ar-renew/login", {"role_id": role_id, "secret_id": secret_id})["client_token"]
    user = as_client(srv, token)
    # The role's TTL changes: the next renewal gives the new one (the policies stay as issued).
    srv.ok("POST", "auth/ar-renew/role/r", {"token_ttl": "10m", "token_max_ttl": "20m", "token_policies": ["app", "creator"]}, status=204)
    renewed = user.ok("POST", "auth/token/renew-self", {})["auth"]
    assert renewed["lease_duration"] == 600 and renewed["token_policies"] == ["app", "default"], renewed
    # The role is deleted: renewal is refused, saying why (OpenBao answers 500, Coffer 400).
    srv.ok("DELETE", "auth/ar-renew/role/r", status=204)
    status, message = error(user, "POST", "auth/token/renew-self", {})
    assert status == (500 if srv.kind == "openbao" else 400), (status, message)
    assert message == 'failed to renew entry: role "r" does not exist during renewal', message
