"""Response wrapping (issue 17 item 6) against OpenBao 2.7.2's observed behaviour
(/work/shared/design/LEASES-DATABASE-PKI.md §4): the X-Vault-Wrap-TTL header on any request, the
wrap_info envelope, sys/wrapping/lookup|unwrap|rewrap|wrap, single use, and the bao CLI's ways of
unwrapping. Each test runs against `bao server -dev` and `cofferd -dev` with the same expectations;
the last one compares the two servers' answers shape for shape."""
import re

import hvac
import pytest

from authtools import (assert_same_as_openbao, ENVELOPE_KEYS, KINDS, NOT_VALID_WRAPPING, WRAP_INFO_KEYS, Cli, as_client, error, kv_put, put_policy, server_param)

GO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    kv_put(api, "wrapped/db", {"user": "app", "password": "wrapped-pass"})
    put_policy(api, "reader", 'path "secret/data/wrapped/*" { capabilities = ["read"] }\n')
    yield api
    api.close()


def wrapped_read(srv, ttl="60"):
    r = srv.raw("GET", "secret/data/wrapped/db", headers={"X-Vault-Wrap-TTL": ttl})
    assert r.status_code == 200, (srv.kind, r.status_code, r.text)
    return r.json()


def test_wrapped_kv_read_envelope_lookup_unwrap_single_use(srv):
    answer = wrapped_read(srv, "60")
    assert sorted(answer) == sorted(ENVELOPE_KEYS), answer
    assert answer["request_id"] == "" and answer["data"] is None and answer["auth"] is None, answer
    assert answer["lease_id"] == "" and answer["lease_duration"] == 0 and answer["warnings"] is None, answer
    info = answer["wrap_info"]
    assert sorted(info) == sorted(WRAP_INFO_KEYS), info  # no wrapped_accessor: a KV read wraps no token
    assert info["ttl"] == 60 and info["creation_path"] == "secret/data/wrapped/db", info
    assert re.fullmatch(GO_TIME, info["creation_time"]) and info["token"].startswith("s."), info
    assert "wrapped-pass" not in str(answer)
    w = info["token"]

    # lookup needs no client token.
    code, looked = srv("POST", "sys/wrapping/lookup", {"token": w}, token=None)
    assert code == 200 and sorted(looked["data"]) == ["creation_path", "creation_time", "creation_ttl"], looked
    assert looked["data"]["creation_ttl"] == 60 and looked["data"]["creation_path"] == "secret/data/wrapped/db"
    # The wrapping token itself: response-wrapping policy, one use.
    token = srv.data("POST", "auth/token/lookup", {"token": w})
    assert token["policies"] == ["response-wrapping"] and token["num_uses"] == 1, token
    assert token["explicit_max_ttl"] == 60 and token["orphan"] is True, token

    code, original = srv("POST", "sys/wrapping/unwrap", {"token": w})
    assert code == 200 and original["data"]["data"] == {"user": "app", "password": "wrapped-pass"}, original
    assert sorted(original) == sorted(ENVELOPE_KEYS) and original["data"]["metadata"]["version"] == 1, original
    # Single use: second unwrap, lookup after unwrap, unknown and empty tokens.
    for body in ({"token": w}, {"token": "s.notatoken000000000000000"}):
        assert error(srv, "POST", "sys/wrapping/unwrap", body) == (400, NOT_VALID_WRAPPING), body
    assert error(srv, "POST", "sys/wrapping/lookup", {"token": w}, token=None) == (400, NOT_VALID_WRAPPING)


def test_unwrap_with_the_wrapping_token_as_client_token_and_a_null_body(srv):
    w = wrapped_read(srv)["wrap_info"]["token"]
    r = srv.session.post(f"{srv.addr}/v1/sys/wrapping/unwrap", data="null", headers={"X-Vault-Token": w})
    assert r.status_code == 200 and r.json()["data"]["data"]["password"] == "wrapped-pass", r.text
    w2 = wrapped_read(srv)["wrap_info"]["token"]
    r = srv.session.post(f"{srv.addr}/v1/sys/wrapping/unwrap", data=b"", headers={"X-Vault-Token": w2})
    assert r.status_code == 200 and r.json()["data"]["data"]["user"] == "app", r.text
    r = srv.session.post(f"{srv.addr}/v1/sys/wrapping/unwrap", data="null", headers={"X-Vault-Token": w2})
    assert (r.status_code, r.json()) == (400, {"errors": [NOT_VALID_WRAPPING]}), r.text  # used up


def test_the_bao_cli_wraps_and_unwraps(srv):
    cli = Cli(srv.bao_bin, srv.addr)
    try:
        wrapped = cli.json("read", "-wrap-ttl=2m", "secret/data/wrapped/db", token="root")
        info = wrapped["wrap_info"]
        assert info["ttl"] == 120 and info["creation_path"] == "secret/data/wrapped/db", wrapped
        # `bao unwrap W` (PUT sys/wrapping/unwrap {"token": W} with root's token).
        unwrapped = cli.json("unwrap", info["token"], token="root")
        assert unwrapped["data"]["data"]["password"] == "wrapped-pass", unwrapped
        # `BAO_TOKEN=W bao unwrap` (body null).
        w = cli.json("read", "-wrap-ttl=2m", "secret/data/wrapped/db", token="root")["wrap_info"]["token"]
        _, out, _ = cli("unwrap", "-field=data", token=w)
        assert "wrapped-pass" in out, out
        code, _, err = cli("unwrap", token=w, check=False)
        assert code == 2, err
        # `bao write sys/wrapping/lookup token=W`.
        w = cli.json("read", "-wrap-ttl=90s", "secret/data/wrapped/db", token="root")["wrap_info"]["token"]
        looked = cli.json("write", "sys/wrapping/lookup", f"token={w}", token="root")
        assert looked["data"]["creation_ttl"] == 90, looked
        # hvac's sys.unwrap sends {"token": W}.
        client = hvac.Client(url=srv.addr, token="root")
        assert client.sys.unwrap(w)["data"]["data"]["password"] == "wrapped-pass"
    finally:
        cli.close()


def test_rewrap_and_wrap(srv):
    first = wrapped_read(srv, "5m")["wrap_info"]
    code, rewrapped = srv("POST", "sys/wrapping/rewrap", {"token": first["token"]})
    assert code == 200, rewrapped
    info = rewrapped["wrap_info"]
    assert info["token"] != first["token"] and info["ttl"] == 300, info
    assert info["creation_path"] == "secret/data/wrapped/db", info
    assert error(srv, "POST", "sys/wrapping/unwrap", {"token": first["token"]}) == (400, NOT_VALID_WRAPPING)
    assert srv.data("POST", "sys/wrapping/unwrap", {"token": info["token"]})["data"]["user"] == "app"

    # sys/wrapping/wrap wraps any JSON object and needs the header.
    assert error(srv, "POST", "sys/wrapping/wrap", {"a": "b"}) == (400, "endpoint requires response wrapping to be used")
    code, wrapped = srv("POST", "sys/wrapping/wrap", {"a": "b", "n": 1}, headers={"X-Vault-Wrap-TTL": "1m"})
    assert code == 200 and wrapped["wrap_info"]["creation_path"] == "sys/wrapping/wrap", wrapped
    assert "wrapped_accessor" not in wrapped["wrap_info"], wrapped
    assert srv.data("POST", "sys/wrapping/unwrap", {"token": wrapped["wrap_info"]["token"]}) == {"a": "b", "n": 1}


def test_wrap_ttl_header_parsing(srv):
    assert error(srv, "GET", "secret/data/wrapped/db", headers={"X-Vault-Wrap-TTL": "abc"}) == \
        (400, 'error parsing X-Vault-Wrap-TTL header: time: invalid duration "abc"')
    code, plain = srv("GET", "secret/data/wrapped/db", headers={"X-Vault-Wrap-TTL": "0"})
    assert code == 200 and plain["wrap_info"] is None and plain["data"]["data"]["user"] == "app", plain
    assert wrapped_read(srv, "2m0s")["wrap_info"]["ttl"] == 120  # what the bao CLI sends


def test_wrapped_token_creation_carries_the_wrapped_accessor(srv):
    code, wrapped = srv("POST", "auth/token/create", {"policies": ["reader"], "ttl": "1h"}, headers={"X-Vault-Wrap-TTL": "60s"})
    assert code == 200 and wrapped["auth"] is None, wrapped
    info = wrapped["wrap_info"]
    assert sorted(info) == sorted(WRAP_INFO_KEYS + ["wrapped_accessor"]), info
    assert info["creation_path"] == "auth/token/create", info
    original = srv.ok("POST", "sys/wrapping/unwrap", {"token": info["token"]})
    assert original["auth"]["accessor"] == info["wrapped_accessor"], (original, info)
    reader = as_client(srv, original["auth"]["client_token"])
    assert reader.data("GET", "secret/data/wrapped/db")["data"]["password"] == "wrapped-pass"


def test_default_policy_may_lookup_and_unwrap_but_not_rewrap(srv):
    token = srv.ok("POST", "auth/token/create", {"policies": ["default"], "ttl": "1h"})["auth"]["client_token"]
    user = as_client(srv, token)
    w = wrapped_read(srv)["wrap_info"]["token"]
    assert user("POST", "sys/wrapping/lookup", {"token": w})[0] == 200
    assert user("POST", "sys/wrapping/rewrap", {"token": w})[0] == 403
    assert user.data("POST", "sys/wrapping/unwrap", {"token": w})["data"]["password"] == "wrapped-pass"
    code, wrapped = user("POST", "sys/wrapping/wrap", {"k": "v"}, headers={"X-Vault-Wrap-TTL": "30s"})
    assert code == 200 and wrapped["wrap_info"]["ttl"] == 30, wrapped


def wrapping_sequence(api):
    out = []

    def call(label, method, path, body=None, token="default", headers=None):
        r = api.raw(method, path, body, token, headers)
        parsed = r.json() if r.content else None
        out.append((label, r.status_code, parsed))
        return parsed if isinstance(parsed, dict) else {}

    kv_put(api, "wrapped/seq", {"k": "v"})
    w = (call("wrapped read", "GET", "secret/data/wrapped/seq", headers={"X-Vault-Wrap-TTL": "60s"}).get("wrap_info") or {})
    call("lookup", "POST", "sys/wrapping/lookup", {"token": w.get("token", "")}, token=None)
    r = (call("rewrap", "POST", "sys/wrapping/rewrap", {"token": w.get("token", "")}).get("wrap_info") or {})
    call("unwrap", "POST", "sys/wrapping/unwrap", {"token": r.get("token", "")})
    call("unwrap again", "POST", "sys/wrapping/unwrap", {"token": r.get("token", "")})
    call("wrap without header", "POST", "sys/wrapping/wrap", {"a": 1})
    call("wrap", "POST", "sys/wrapping/wrap", {"a": 1}, headers={"X-Vault-Wrap-TTL": "60"})
    call("wrapped token create", "POST", "auth/token/create", {"ttl": "1h"}, headers={"X-Vault-Wrap-TTL": "60"})
    call("bad header", "GET", "secret/data/wrapped/seq", headers={"X-Vault-Wrap-TTL": "abc"})
    return out


def test_same_shapes_as_openbao(bao_bin, cofferd_bin):
    assert_same_as_openbao(bao_bin, cofferd_bin, wrapping_sequence)


WRAPPING_BOUNDS = {
    # Either bound makes wrapping mandatory on the path; merged policies keep the smallest non-zero
    # bound of each kind (observed on OpenBao 2.7.2: 100-150 with 50-110 allows 50-110).
    "b-100-150": 'path "secret/data/bounded/*" { capabilities = ["list"] min_wrapping_ttl = "100s" max_wrapping_ttl = "150s" }\n',
    "b-50-110": 'path "secret/data/bounded/*" { capabilities = ["read"] min_wrapping_ttl = "50s" max_wrapping_ttl = 110 }\n',
    "b-none": 'path "secret/data/bounded/*" { capabilities = ["read"] }\n',
    "b-max": 'path "secret/data/bounded/*" { capabilities = ["read"] max_wrapping_ttl = "100s" }\n',
}


def wrapping_bounds_sequence(api):
    out = []
    kv_put(api, "bounded/a", {"k": "v"})
    for name, text in WRAPPING_BOUNDS.items():
        put_policy(api, name, text)
    r = api.raw("PUT", "sys/policies/acl/inverted", {"policy": 'path "x/*" { capabilities = ["read"] min_wrapping_ttl = "100s" max_wrapping_ttl = "50s" }'})
    out.append(("max under min", r.status_code, None))
    for policies in (["b-50-110"], ["b-100-150", "b-none"], ["b-100-150", "b-50-110"], ["b-max"]):
        token = api.ok("POST", "auth/token/create", {"policies": policies, "ttl": "1h"})["auth"]["client_token"]
        for ttl in (None, "40s", "60s", "105s", "120s", "160s"):
            headers = {"X-Vault-Wrap-TTL": ttl} if ttl else None
            r = api.raw("GET", "secret/data/bounded/a", None, token, headers)
            out.append((f"{'+'.join(policies)} wrap {ttl}", r.status_code, None))
        r = api.raw("GET", "secret/data/bounded/missing", None, token, {"X-Vault-Wrap-TTL": "105s"})
        out.append((f"{'+'.join(policies)} missing", r.status_code, None))
    return out


def test_policy_wrapping_ttl_bounds_as_openbao(bao_bin, cofferd_bin):
    assert_same_as_openbao(bao_bin, cofferd_bin, wrapping_bounds_sequence)
