"""The seed's multi-tenant flow (issue 17 "Tests"): an agent logs in with AppRole, two tenants log in
with JWTs from their identity provider (keys served as a JWKS over HTTPS by authtools.FakeIdP; roles
bound to the `tenant` claim), and each reads only its own secrets. Runs against `bao server -dev` and
`cofferd -dev` with the same expectations."""
import pytest

from authtools import (KINDS, SigningKey, as_client, claims, enable_auth, error, idp, kv_put, login_ok, put_policy,  # noqa: F401
                       server_param)

POLICIES = {
    "agent": 'path "secret/data/agent/*" { capabilities = ["read"] }\n',
    "tenant-a": 'path "secret/data/tenants/a/*" { capabilities = ["read"] }\n'
                'path "secret/metadata/tenants/a/*" { capabilities = ["list"] }\n',
    "tenant-b": 'path "secret/data/tenants/b/*" { capabilities = ["read"] }\n'
                'path "secret/metadata/tenants/b/*" { capabilities = ["list"] }\n',
}


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    yield api
    api.close()


def test_agent_and_two_tenants_each_read_only_their_own(srv, idp):
    for name, text in POLICIES.items():
        put_policy(srv, name, text)
    kv_put(srv, "agent/config", {"endpoint": "https://agent.internal"})
    kv_put(srv, "tenants/a/db", {"password": "tenant-a-secret"})
    kv_put(srv, "tenants/b/db", {"password": "tenant-b-secret"})

    # The agent: AppRole.
    enable_auth(srv, "approle", "approle")
    srv.ok("POST", "auth/approle/role/agent", {"token_policies": ["agent"], "token_ttl": "10m"}, status=204)
    role_id = srv.data("GET", "auth/approle/role/agent/role-id")["role_id"]
    secret_id = srv.data("POST", "auth/approle/role/agent/secret-id")["secret_id"]
    agent = as_client(srv, login_ok(srv, "auth/approle/login", {"role_id": role_id, "secret_id": secret_id})["client_token"])
    assert agent.data("GET", "secret/data/agent/config")["data"] == {"endpoint": "https://agent.internal"}
    for tenant in "ab":
        assert agent("GET", f"secret/data/tenants/{tenant}/db")[0] == 403

    # The tenants: JWTs from the shared IdP, told apart by their `tenant` claim.
    key = SigningKey("ES256", "tenants-key")
    idp.keys = [key]
    enable_auth(srv, "jwt", "jwt")
    srv.ok("POST", "auth/jwt/config", {"jwks_url": f"{idp.url}/jwks", "jwks_ca_pem": idp.ca_pem, "bound_issuer": idp.issuer},
           status=204)
    for tenant in "ab":
        srv.ok("POST", f"auth/jwt/role/tenant-{tenant}", {
            "role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub", "bound_claims": {"tenant": tenant},
            "claim_mappings": {"tenant": "tenant"}, "token_policies": [f"tenant-{tenant}"], "token_ttl": "10m"}, status=204)

    def tenant_jwt(tenant):
        return key.sign(claims(iss=idp.issuer, aud="coffer", sub=f"svc-{tenant}", tenant=tenant))

    tokens = {}
    for tenant in "ab":
        auth = login_ok(srv, "auth/jwt/login", {"role": f"tenant-{tenant}", "jwt": tenant_jwt(tenant)})
        assert auth["policies"] == ["default", f"tenant-{tenant}"], auth
        assert auth["metadata"] == {"role": f"tenant-{tenant}", "tenant": tenant}, auth
        tokens[tenant] = as_client(srv, auth["client_token"])
    assert tokens["a"].data("GET", "secret/data/tenants/a/db")["data"] == {"password": "tenant-a-secret"}
    assert tokens["b"].data("GET", "secret/data/tenants/b/db")["data"] == {"password": "tenant-b-secret"}
    for own, other in (("a", "b"), ("b", "a")):
        code, answer = tokens[own]("GET", f"secret/data/tenants/{other}/db")
        assert code == 403 and f"tenant-{other}-secret" not in str(answer), (own, code, answer)
        assert tokens[own]("LIST", f"secret/metadata/tenants/{other}")[0] == 403
        assert tokens[own].data("LIST", f"secret/metadata/tenants/{own}")["keys"] == ["db"]
        assert tokens[own]("GET", "secret/data/agent/config")[0] == 403

    # A tenant's JWT cannot log in to the other tenant's role.
    assert error(srv, "POST", "auth/jwt/login", {"role": "tenant-b", "jwt": tenant_jwt("a")}, token=None) == \
        (400, 'error validating claims: claim "tenant" does not match any associated bound claim values')
    # Two tenants, two entities.
    assert tokens["a"].data("GET", "auth/token/lookup-self")["entity_id"] != \
        tokens["b"].data("GET", "auth/token/lookup-self")["entity_id"]
