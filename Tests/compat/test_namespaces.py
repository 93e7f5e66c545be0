"""Namespaces (issue 19): the unmodified bao CLI and hvac drive `sys/namespaces`, and the seed's
multi-tenant flow runs with each tenant in its own namespace. Every test runs against `bao server -dev`
and `cofferd -dev` with the same expectations (server_param), except where a comment names a
difference; docs/namespaces.md lists them."""
import json
import time

import hvac
import pytest

from authtools import (KINDS, SigningKey, as_client, claims, idp, login_ok, server_param)  # noqa: F401

NS_FIELDS = {"custom_metadata", "id", "locked", "path", "tainted", "uuid"}


@pytest.fixture(params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    yield api
    api.close()


def test_the_cli_creates_lists_patches_locks_and_deletes(srv):
    def cli(*args, ns=None):
        flags = [f"-namespace={ns}"] if ns else []
        _, out, _ = srv.cli(args[0], args[1], *flags, "-format=json", *args[2:])
        return json.loads(out) if out.strip() else None

    created = cli("namespace", "create", "team-a")
    assert set(created) == NS_FIELDS and created["path"] == "team-a/" and len(created["id"]) == 6
    cli("namespace", "create", "-custom-metadata=owner=bob", "team-b")
    # OpenBao lists in no fixed order; Coffer sorts.
    listed = cli("namespace", "list")
    assert sorted(listed) == ["team-a/", "team-b/"] and (srv.kind == "openbao" or listed == sorted(listed))
    child = cli("namespace", "create", "child", ns="team-a")
    assert child["path"] == "team-a/child/"
    assert cli("namespace", "list", ns="team-a") == ["child/"]
    looked = cli("namespace", "lookup", "team-b")
    assert looked["custom_metadata"] == {"owner": "bob"} and looked["locked"] is False
    patched = cli("namespace", "patch", "-custom-metadata=owner=carol", "team-b")
    assert patched["custom_metadata"] == {"owner": "carol"}

    # Bad names: 400 with OpenBao's words, nothing made.
    assert srv.error("POST", "sys/namespaces/sys") == \
        (400, '"sys/" is a reserved path and cannot be used as a namespace name')
    assert srv.error("POST", "sys/namespaces/team-a/x") == (400, "namespace name cannot contain /")
    assert srv.error("DELETE", "sys/namespaces/team-a") == \
        (400, "unable to delete namespace containing child namespaces")

    # The API lock, from inside and from the parent.
    key = srv("POST", "sys/namespaces/api-lock/lock", headers={"X-Vault-Namespace": "team-b"})[1]["data"]["unlock_key"]
    code, answer = srv("GET", "team-b/sys/mounts")
    assert code == 503 and answer["errors"] == [
        'API access to this namespace has been locked by an administrator - "team-b/" must be unlocked to gain access.']
    assert srv.error("POST", "sys/namespaces/api-lock/lock/team-b") == \
        (400, 'cannot lock namespace "team-b/": is already locked')
    code, _ = srv("POST", "sys/namespaces/api-lock/unlock", {"unlock_key": key}, headers={"X-Vault-Namespace": "team-b"})
    assert code in (200, 204)
    assert srv("GET", "team-b/sys/mounts")[0] == 200
    srv("POST", "sys/namespaces/api-lock/lock", headers={"X-Vault-Namespace": "team-b"})
    unlocked = srv.ok("POST", "sys/namespaces/api-lock/unlock/team-b", {})
    assert unlocked["warnings"] == ["Namespace unlocked using sudo capabilities"]

    # Delete: answered "in-progress", gone at once.
    assert srv("DELETE", "team-a/sys/namespaces/child")[1]["data"] == {"status": "in-progress"}
    # OpenBao finishes in the background (a read may still find it for a moment); Coffer before answering.
    assert eventually(lambda: srv("GET", "team-a/sys/namespaces/child") == (404, {"errors": []}), srv.kind == "openbao")
    srv.cli("namespace", "delete", "team-a")
    assert eventually(lambda: cli("namespace", "list") == ["team-b/"], srv.kind == "openbao")


def eventually(check, wait):
    """`check()` now or, when `wait`, within five seconds."""
    deadline = time.time() + (5 if wait else 0)
    while not check():
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


POLICY = 'path "kv/data/*" { capabilities = ["read"] }\npath "kv/metadata/*" { capabilities = ["list"] }\n'


def test_two_tenants_in_namespaces_see_only_their_own(srv, idp):
    """The seed's flow across namespaces: an agent with AppRole at root; each tenant a namespace with a
    KV v2 mount and a JWT login. Tenant A can neither read, list, nor learn of B's mounts and secrets."""
    key = SigningKey("ES256", "tenants-key")
    idp.keys = [key]
    tokens = {}
    for tenant in ("a", "b"):
        ns = f"tenant-{tenant}"
        srv.ok("POST", f"sys/namespaces/{ns}")
        h = {"X-Vault-Namespace": ns}
        assert srv("POST", "sys/mounts/kv", {"type": "kv-v2"}, headers=h)[0] == 204
        assert srv("POST", "kv/data/db", {"data": {"password": f"{ns}-secret"}}, headers=h)[0] == 200
        assert srv("PUT", "sys/policies/acl/reader", {"policy": POLICY}, headers=h)[0] == 204
        assert srv("POST", "sys/auth/jwt", {"type": "jwt"}, headers=h)[0] == 204
        assert srv("POST", "auth/jwt/config", {"jwks_url": f"{idp.url}/jwks", "jwks_ca_pem": idp.ca_pem,
                                              "bound_issuer": idp.issuer}, headers=h)[0] == 204
        assert srv("POST", "auth/jwt/role/svc", {
            "role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub", "bound_claims": {"tenant": tenant},
            "token_policies": ["reader"], "token_ttl": "10m"}, headers=h)[0] == 204
        jwt = key.sign(claims(iss=idp.issuer, aud="coffer", sub=f"svc-{tenant}", tenant=tenant))
        auth = login_ok(srv, f"{ns}/auth/jwt/login", {"role": "svc", "jwt": jwt})
        ns_id = srv.data("GET", f"sys/namespaces/{ns}")["id"]
        assert auth["client_token"].endswith("." + ns_id) and auth["accessor"].endswith("." + ns_id)
        tokens[tenant] = as_client(srv, auth["client_token"])
    # A tenant's JWT does not log in to the other tenant's role.
    jwt_a = key.sign(claims(iss=idp.issuer, aud="coffer", sub="svc-a", tenant="a"))
    assert srv("POST", "tenant-b/auth/jwt/login", {"role": "svc", "jwt": jwt_a}, token=None)[0] == 400

    a = tokens["a"]
    assert a.data("GET", "tenant-a/kv/data/db")["data"] == {"password": "tenant-a-secret"}
    assert a("GET", "kv/data/db", headers={"X-Vault-Namespace": "tenant-a"})[1]["data"]["data"] == \
        {"password": "tenant-a-secret"}
    assert a.data("LIST", "tenant-a/kv/metadata/")["keys"] == ["db"]
    lookup = a.data("GET", "auth/token/lookup-self")  # no header: the token's suffix finds its namespace
    assert lookup["namespace_path"] == "tenant-a/"
    # The login made an entity in the tenant's own identity store, not at root.
    assert srv.data("GET", f"tenant-a/identity/entity/id/{lookup['entity_id']}")["name"].startswith("entity_")
    assert srv("GET", f"identity/entity/id/{lookup['entity_id']}")[0] == 404

    # Every route to B, and to root: refused, and nothing of B in any answer.
    attempts = [
        ("GET", "tenant-b/kv/data/db", None), ("GET", "kv/data/db", "tenant-b"), ("LIST", "tenant-b/kv/metadata/", None),
        ("GET", "tenant-b/sys/mounts", None), ("GET", "sys/mounts", "tenant-b"), ("LIST", "sys/policies/acl", "tenant-b"),
        ("GET", "tenant-b/sys/internal/ui/mounts/kv", None), ("GET", "tenant-a/../tenant-b/kv/data/db", None),
        ("GET", "tenant-b/kv/data/db", "tenant-a"), ("GET", "sys/mounts", None), ("LIST", "sys/namespaces", None),
        ("GET", "sys/namespaces/tenant-b", None),
    ]
    for method, path, ns in attempts:
        code, answer = a(method, path, headers={"X-Vault-Namespace": ns} if ns else None)
        assert code in (400, 403, 404), (srv.kind, method, path, ns, code, answer)
        assert "tenant-b-secret" not in json.dumps(answer) and "kv-v2" not in json.dumps(answer), (path, answer)
    # A policy in A's namespace naming B's paths grants nothing there.
    srv("PUT", "sys/policies/acl/reach", {"policy": 'path "tenant-b/*" { capabilities = ["read", "list"] }'},
        headers={"X-Vault-Namespace": "tenant-a"})
    reach = srv.ok("POST", "tenant-a/auth/token/create", {"policies": ["reach"]})["auth"]["client_token"]
    assert as_client(srv, reach)("GET", "tenant-b/kv/data/db")[0] == 403
    # Root's token still reaches both.
    assert srv.data("GET", "tenant-b/kv/data/db")["data"] == {"password": "tenant-b-secret"}

    # The agent logs in with AppRole at root; its policy names one tenant's paths by their full path.
    srv.ok("PUT", "sys/policies/acl/agent", {"policy": 'path "tenant-a/kv/data/*" { capabilities = ["read"] }'},
           status=204)
    srv.ok("POST", "sys/auth/approle", {"type": "approle"}, status=204)
    srv.ok("POST", "auth/approle/role/agent", {"token_policies": ["agent"], "token_ttl": "10m"}, status=204)
    role_id = srv.data("GET", "auth/approle/role/agent/role-id")["role_id"]
    secret_id = srv.data("POST", "auth/approle/role/agent/secret-id")["secret_id"]
    agent = as_client(srv, login_ok(srv, "auth/approle/login", {"role_id": role_id, "secret_id": secret_id})["client_token"])
    assert agent.data("GET", "tenant-a/kv/data/db")["data"] == {"password": "tenant-a-secret"}
    assert agent("GET", "kv/data/db", headers={"X-Vault-Namespace": "tenant-a"})[0] == 200
    assert agent("GET", "tenant-b/kv/data/db")[0] == 403


def test_hvac_works_in_a_namespace(srv):
    srv.ok("POST", "sys/namespaces/hv")
    client = hvac.Client(url=srv.addr, token="root", namespace="hv")
    client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    client.secrets.kv.v2.create_or_update_secret(path="app", secret={"k": "v"}, mount_point="kv")
    assert client.secrets.kv.v2.read_secret_version(path="app", mount_point="kv", raise_on_deleted_version=True)[
        "data"]["data"] == {"k": "v"}
    assert "kv/" in client.sys.list_mounted_secrets_engines()["data"]
    rootless = hvac.Client(url=srv.addr, token="root")
    assert "kv/" not in rootless.sys.list_mounted_secrets_engines()["data"]
