"""The JWT auth method (issue 17 item 3) with the bao CLI, hvac and raw HTTP, against OpenBao 2.7.2's
observed behaviour (/work/shared/design/AUTH-HA-OPS.md §3.1–3.3). JWTs are signed here (PyJWT,
`cryptography` keys); JWKS and OIDC discovery documents are served over real HTTPS on a loopback port
by authtools.FakeIdP.

Each test runs against `bao server -dev` and `cofferd -dev` with the same expectations. Where Coffer
differs on purpose (AUTH-HA-OPS.md §12: a cooldown on JWKS refetches for unknown kids, the discovery
issuer enforced without bound_issuer), the test says so and asserts each server's documented answer.
"""
import time

import hvac
import pytest

from authtools import (assert_same_as_openbao, KINDS, Cli, SigningKey, accessor_of, as_client, check_auth_block, claims, enable_auth, error,
                       hs256_with_public_key, idp, kv_put, login, login_ok, put_policy, server_param, tamper_signature, unsigned_token)  # noqa: F401  (idp is a fixture)

ISSUER = "https://issuer.example"
ES = SigningKey("ES256")
RS = SigningKey("RS256")
ED = SigningKey("EdDSA")
STRANGER = SigningKey("ES256")  # never configured anywhere
V = "error validating token: "
SIG = V + "error verifying token signature: "
NO_KEY = SIG + "no known key successfully validated the token signature"
UNKNOWN_KID = SIG + "failed to verify id token signature"
TOO_LARGE = V + "token is larger than 65536 bytes"
BAD_AUD = V + "invalid audience (aud) claim: audience claim does not match any expected audience"
GOOD = {"iss": ISSUER, "aud": "coffer", "sub": "svc-web", "team": "payments", "email": "web@example.com"}
ROLE_KEYS = ["allowed_redirect_uris", "bound_audiences", "bound_claims", "bound_claims_type", "bound_subject", "callback_mode",
             "claim_mappings", "clock_skew_leeway", "expiration_leeway", "groups_claim", "max_age", "not_before_leeway",
             "oauth2_metadata", "oidc_disable_confirmation", "oidc_scopes", "role_type", "token_bound_cidrs",
             "token_explicit_max_ttl", "token_max_ttl", "token_no_default_policy", "token_num_uses", "token_period",
             "token_policies", "token_policies_template_claims", "token_strictly_bind_ip", "token_ttl", "token_type",
             "user_claim", "user_claim_json_pointer", "verbose_oidc_logging"]
CONFIG_KEYS = ["bound_issuer", "default_role", "jwks_ca_pem", "jwks_url", "jwt_supported_algs", "jwt_validation_pubkeys",
               "namespace_in_state", "oidc_client_id", "oidc_discovery_ca_pem", "oidc_discovery_url", "oidc_response_mode",
               "oidc_response_types", "override_allowed_server_names", "provider_config", "status"]
WEB_ROLE = {"role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub", "bound_claims": {"team": "payments"},
            "claim_mappings": {"email": "email", "team": "team"}, "token_policies": ["app1"], "token_ttl": "15m"}


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    put_policy(api, "app1", 'path "secret/data/app1/*" { capabilities = ["read"] }\n')
    put_policy(api, "grp", 'path "secret/data/grp/*" { capabilities = ["read"] }\n')
    kv_put(api, "app1/db", {"password": "app1-db"})
    kv_put(api, "grp/db", {"password": "grp-db"})
    yield api
    api.close()


def static_mount(srv, path, keys=(ES, RS, ED), role=WEB_ROLE, **config):
    enable_auth(srv, "jwt", path)
    srv.ok("POST", f"auth/{path}/config", {"jwt_validation_pubkeys": [k.public_pem for k in keys], "bound_issuer": ISSUER,
                                            **config}, status=204)
    srv.ok("POST", f"auth/{path}/role/web", role, status=204)


def jwt_login(srv, path, token, role="web"):
    return login(srv, f"auth/{path}/login", {"role": role, "jwt": token})


# ---- Logins that work ----

def test_static_keys_bao_cli_and_hvac_login(srv):
    static_mount(srv, "jwt")
    config = srv.data("GET", "auth/jwt/config")
    assert sorted(config) == CONFIG_KEYS, sorted(config)
    assert config["jwt_validation_pubkeys"] == [k.public_pem.strip() for k in (ES, RS, ED)], config
    assert config["bound_issuer"] == ISSUER and config["jwks_url"] == "" and "oidc_client_secret" not in config
    role = srv.data("GET", "auth/jwt/role/web")
    assert sorted(role) == ROLE_KEYS, sorted(role)
    assert role["token_ttl"] == 900 and role["bound_claims"] == {"team": "payments"} and role["role_type"] == "jwt", role

    # The unmodified bao CLI, ES256.
    cli = Cli(srv.bao_bin, srv.addr)
    try:
        answer = cli.json("write", "auth/jwt/login", "role=web", f"jwt={ES.sign(claims(**GOOD))}")
        auth = answer["auth"]  # (the CLI re-encodes the answer: its key order is the CLI's)
        assert auth["policies"] == ["app1", "default"] and auth["lease_duration"] == 900, auth
        assert auth["metadata"] == {"email": "web@example.com", "role": "web", "team": "payments"}, auth
        _, out, _ = cli("kv", "get", "-field=password", "secret/app1/db", token=auth["client_token"])
        assert out.strip() == "app1-db"
    finally:
        cli.close()

    # hvac, RS256 and EdDSA, and no kid header (static keys: a kid is optional).
    for key in (RS, ED):
        client = hvac.Client(url=srv.addr)
        answer = client.auth.jwt.jwt_login(role="web", jwt=key.sign(claims(**GOOD), kid=False), path="jwt")
        check_auth_block(answer)
        assert answer["auth"]["metadata"]["role"] == "web" and client.token == answer["auth"]["client_token"]
        assert client.auth.token.lookup_self()["data"]["path"] == "auth/jwt/login"

    # One entity for one subject; its alias is the user_claim's value on this mount.
    first = login_ok(srv, "auth/jwt/login", {"role": "web", "jwt": ES.sign(claims(**GOOD))})
    second = login_ok(srv, "auth/jwt/login", {"role": "web", "jwt": RS.sign(claims(**GOOD))})
    assert first["entity_id"] == second["entity_id"]
    aliases = srv.data("GET", f"identity/entity/id/{first['entity_id']}")["aliases"]
    assert [(a["name"], a["mount_type"], a["mount_accessor"]) for a in aliases] == \
        [("svc-web", "jwt", accessor_of(srv, "jwt"))], aliases


def test_time_claims_tolerate_sixty_seconds(srv):
    static_mount(srv, "jwt-skew")
    now = int(time.time())
    for late in ({"exp": now - 30, "iat": now - 300, "nbf": now - 300},      # expired 30 s ago
                 {"nbf": now + 30, "iat": now, "exp": now + 300},            # valid in 30 s
                 {"iat": now - 10, "nbf": None, "exp": None}):               # no exp: accepted with iat
        login_ok(srv, "auth/jwt-skew/login", {"role": "web", "jwt": ES.sign(claims(**GOOD, **late))})
    # With all leeways -1, no tolerance at all.
    srv.ok("POST", "auth/jwt-skew/role/strict", {**WEB_ROLE, "clock_skew_leeway": -1, "expiration_leeway": -1,
                                                 "not_before_leeway": -1}, status=204)
    token = ES.sign(claims(**GOOD, exp=now - 5, iat=now - 300, nbf=now - 300))
    assert error(srv, "POST", "auth/jwt-skew/login", {"role": "strict", "jwt": token}, token=None) == \
        (400, V + "invalid expiration time (exp) claim: token is expired")


# ---- Bad input ----

def bad_cases():
    now = int(time.time())
    padded = STRANGER.sign(claims(**GOOD, pad="x" * (1 << 20)))  # a 1 MB JWT signed by an unknown key
    return [
        ("expired", "web", ES.sign(claims(**GOOD, exp=now - 120, iat=now - 400, nbf=now - 400)),
         V + "invalid expiration time (exp) claim: token is expired"),
        ("not yet valid", "web", ES.sign(claims(**GOOD, nbf=now + 120, iat=now, exp=now + 400)),
         V + "invalid not before (nbf) claim: token not yet valid"),
        ("issued in the future", "web", ES.sign(claims(**GOOD, iat=now + 150, nbf=now, exp=now + 400)),
         V + "invalid issued at (iat) claim: token issued in the future"),
        ("no time claims", "web", ES.sign(claims(**GOOD, iat=None, nbf=None, exp=None)),
         V + "no issued at (iat), not before (nbf), or expiration time (exp) claims in token"),
        ("wrong audience", "web", ES.sign(claims(**{**GOOD, "aud": ["other", "another"]})), BAD_AUD),
        ("no audience", "web", ES.sign(claims(**{**GOOD, "aud": None})), BAD_AUD),
        ("wrong issuer", "web", ES.sign(claims(**{**GOOD, "iss": "https://evil.example"})), V + "invalid issuer (iss) claim"),
        ("signed by an unknown key", "web", STRANGER.sign(claims(**GOOD)), NO_KEY),
        ("bad signature", "web", tamper_signature(ES.sign(claims(**GOOD))), NO_KEY),
        ("alg none", "web", unsigned_token(claims(**GOOD)), NO_KEY),
        ("HS256 keyed with the ES256 public key", "web", hs256_with_public_key(claims(**GOOD), ES), NO_KEY),
        ("HS256 keyed with the RS256 public key", "web", hs256_with_public_key(claims(**GOOD), RS), NO_KEY),
        ("not a JWT", "web", "not.a.jwt", SIG + "illegal base64 data at input byte 0"),
        ("1 MB JWT", "web", padded, NO_KEY),
        ("user claim missing", "web", ES.sign(claims(**{**GOOD, "sub": None})), 'claim "sub" not found in token'),
        ("bound claim missing", "web", ES.sign(claims(**{**GOOD, "team": None})), 'error validating claims: claim "team" is missing'),
        ("bound claim wrong", "web", ES.sign(claims(**{**GOOD, "team": "billing"})),
         'error validating claims: claim "team" does not match any associated bound claim values'),
        ("wrong subject", "subject", ES.sign(claims(**{**GOOD, "sub": "svc-other"})), V + "invalid subject (sub) claim"),
        ("unknown role", "nope", ES.sign(claims(**GOOD)), 'role "nope" could not be found'),
        ("no role, no default_role", "", ES.sign(claims(**GOOD)), "missing role"),
        ("empty JWT", "web", "", "missing token"),
    ]


def test_bad_tokens_are_refused_with_openbaos_strings(srv):
    static_mount(srv, "jwt-bad", keys=(ES, RS))
    srv.ok("POST", "auth/jwt-bad/role/subject", {"role_type": "jwt", "bound_subject": "svc-web", "user_claim": "sub",
                                                 "bound_audiences": ["coffer"]}, status=204)
    problems = []
    for name, role, token, expected in bad_cases():
        if name == "1 MB JWT" and srv.kind == "cofferd":
            expected = TOO_LARGE  # Coffer refuses tokens over 64 KiB before decoding them (docs/auth.md)
        body = {"role": role, "jwt": token} if role else {"jwt": token}
        r = srv.raw("POST", "auth/jwt-bad/login", body, token=None)
        got = (r.status_code, r.json().get("errors") if r.headers.get("Content-Type", "").startswith("application/json") else r.text[:200])
        if got != (400, [expected]):
            problems.append(f"{name}: expected 400 {expected!r}, got {got[0]} {got[1]!r}")
        if token and len(token) > 40 and token[-40:] in r.text:
            problems.append(f"{name}: the answer echoes the JWT")
    assert not problems, f"{srv.kind}:\n" + "\n".join(problems)
    # A validly signed 1 MB JWT: OpenBao takes it; Coffer refuses it by its size (docs/auth.md).
    code, answer = jwt_login(srv, "jwt-bad", ES.sign(claims(**GOOD, pad="x" * (1 << 20))))
    if srv.kind == "openbao":
        assert code == 200, answer
    else:
        assert (code, answer) == (400, {"errors": [TOO_LARGE]}), (code, answer)
    # Still serving, and the good token still works after all that.
    login_ok(srv, "auth/jwt-bad/login", {"role": "web", "jwt": ES.sign(claims(**GOOD))})


def test_config_and_role_errors(srv, idp):
    enable_auth(srv, "jwt", "jwt-errs")
    assert error(srv, "POST", "auth/jwt-errs/config", {"bound_issuer": ISSUER}) == (400, (
        "exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs', 'oidc_discovery_url', or 'provider_config' "
        "must be set"))
    assert error(srv, "POST", "auth/jwt-errs/config", {"jwt_validation_pubkeys": ["not a pem"]}) == \
        (400, "error parsing public key: data does not contain any valid public keys")
    code, message = error(srv, "POST", "auth/jwt-errs/config", {"jwks_url": "https://127.0.0.1:1/jwks"})
    assert (code, message) == (400, "error checking jwks URL"), (code, message)
    code, message = error(srv, "POST", "auth/jwt-errs/config", {"oidc_discovery_url": "https://127.0.0.1:1"})
    assert code == 400 and message.startswith("error checking oidc discovery URL"), (code, message)
    # The IdP's certificate is not trusted without its CA.
    code, message = error(srv, "POST", "auth/jwt-errs/config", {"jwks_url": f"{idp.url}/jwks"})
    assert (code, message) == (400, "error checking jwks URL"), (code, message)

    srv.ok("POST", "auth/jwt-errs/config", {"jwt_validation_pubkeys": [ES.public_pem]}, status=204)
    base = {"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["coffer"]}
    for body, message in [
        ({**base, "user_claim": None}, "a user claim must be defined on the role"),
        ({"role_type": "jwt", "user_claim": "sub"}, "must have at least one bound constraint when creating/updating a role"),
        ({**base, "role_type": None}, "'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified."),
        ({**base, "role_type": "foo"}, "invalid 'role_type': foo"),
    ]:
        body = {k: v for k, v in body.items() if v is not None}
        assert error(srv, "POST", "auth/jwt-errs/role/r", body) == (400, message), body
    assert srv("GET", "auth/jwt-errs/role/nope") == (404, {"errors": []})


def test_bound_claims_globs_pointers_and_claim_mappings(srv):
    enable_auth(srv, "jwt", "jwt-claims")
    srv.ok("POST", "auth/jwt-claims/config", {"jwt_validation_pubkeys": [ES.public_pem]}, status=204)
    srv.ok("POST", "auth/jwt-claims/role/k8s", {
        "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["coffer"], "bound_claims_type": "glob",
        "bound_claims": {"/kubernetes.io/namespace": "prod", "sub": "system:serviceaccount:prod:*", "groups": ["eng", "ops"]},
        "claim_mappings": {"/kubernetes.io/namespace": "k8s_ns", "email": "email"}, "token_policies": ["app1"]}, status=204)
    ok = claims(aud="coffer", sub="system:serviceaccount:prod:web", email="w@example.com", groups=["x", "ops"],
                **{"kubernetes.io": {"namespace": "prod"}})
    auth = login_ok(srv, "auth/jwt-claims/login", {"role": "k8s", "jwt": ES.sign(ok)})
    assert auth["metadata"] == {"email": "w@example.com", "k8s_ns": "prod", "role": "k8s"}, auth
    for change, message in [
        ({"kubernetes.io": {"namespace": "dev"}},
         'error validating claims: claim "/kubernetes.io/namespace" does not match any associated bound claim values'),
        ({"sub": "system:serviceaccount:dev:web"}, 'error validating claims: claim "sub" does not match any associated bound claim values'),
        ({"groups": ["x"]}, 'error validating claims: claim "groups" does not match any associated bound claim values'),
    ]:
        token = ES.sign({**ok, **change})
        assert error(srv, "POST", "auth/jwt-claims/login", {"role": "k8s", "jwt": token}, token=None) == (400, message), change


def test_groups_claim_maps_to_external_group_policies(srv):
    enable_auth(srv, "jwt", "jwt-groups")
    accessor = accessor_of(srv, "jwt-groups")
    srv.ok("POST", "auth/jwt-groups/config", {"jwt_validation_pubkeys": [ES.public_pem]}, status=204)
    srv.ok("POST", "auth/jwt-groups/role/web", {"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["coffer"],
                                                "groups_claim": "groups", "token_policies": ["app1"]}, status=204)
    group = srv.data("POST", "identity/group", {"name": "eng-external", "type": "external", "policies": ["grp"]})
    srv.data("POST", "identity/group-alias", {"name": "eng", "mount_accessor": accessor, "canonical_id": group["id"]})

    code, answer = login(srv, "auth/jwt-groups/login",
                         {"role": "web", "jwt": ES.sign(claims(aud="coffer", sub="member", groups=["eng", "other"]))})
    assert code == 200, answer
    auth = answer["auth"]
    assert auth["policies"] == ["app1", "default", "grp"] and auth["token_policies"] == ["app1", "default"], auth
    assert auth["identity_policies"] == ["grp"], auth
    member = as_client(srv, auth["client_token"])
    assert member.data("GET", "secret/data/grp/db")["data"] == {"password": "grp-db"}
    entity = srv.data("GET", f"identity/entity/id/{auth['entity_id']}")
    assert group["id"] in entity["group_ids"], entity

    # Not in the group: token policies only.
    outsider = login_ok(srv, "auth/jwt-groups/login", {"role": "web", "jwt": ES.sign(claims(aud="coffer", sub="outsider",
                                                                                             groups=["other"]))})
    assert outsider["policies"] == ["app1", "default"], outsider
    assert as_client(srv, outsider["client_token"])("GET", "secret/data/grp/db")[0] == 403


# ---- Keys from the IdP over HTTPS ----

def fetches(idp):
    return len(idp.requests("/jwks", "GET"))


def test_jwks_url_over_https_and_key_rotation(srv, idp):
    first, second, bogus = SigningKey("ES256", "k-one"), SigningKey("ES256", "k-two"), SigningKey("ES256", "k-bogus")
    idp.keys = [first]
    idp.clear()
    enable_auth(srv, "jwt", "jwt-jwks")
    srv.ok("POST", "auth/jwt-jwks/config", {"jwks_url": f"{idp.url}/jwks", "jwks_ca_pem": idp.ca_pem}, status=204)
    config = srv.data("GET", "auth/jwt-jwks/config")
    assert config["jwks_url"] == f"{idp.url}/jwks" and config["jwks_ca_pem"].strip() == idp.ca_pem.strip(), config
    srv.ok("POST", "auth/jwt-jwks/role/web", WEB_ROLE, status=204)
    login_ok(srv, "auth/jwt-jwks/login", {"role": "web", "jwt": first.sign(claims(**GOOD))})
    assert fetches(idp) >= 1, idp.log
    # Cached: ten more logins fetch nothing.
    before = fetches(idp)
    for _ in range(10):
        login_ok(srv, "auth/jwt-jwks/login", {"role": "web", "jwt": first.sign(claims(**GOOD))})
    assert fetches(idp) == before, f"{fetches(idp) - before} JWKS fetches for 10 logins with a known kid"

    # The IdP rotates: the new kid is picked up (Coffer may wait out its refetch cooldown: retried up to 15 s).
    idp.keys = [second]
    deadline = time.monotonic() + 15
    while True:
        code, answer = jwt_login(srv, "jwt-jwks", second.sign(claims(**GOOD)))
        if code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert code == 200, (code, answer)
    assert fetches(idp) > before
    # The retired key is no longer trusted.
    assert error(srv, "POST", "auth/jwt-jwks/login", {"role": "web", "jwt": first.sign(claims(**GOOD))}, token=None) == \
        (400, UNKNOWN_KID)

    # An unknown kid, again and again: OpenBao refetches the JWKS every time; Coffer refetches at a
    # bounded rate (AUTH-HA-OPS.md §9 item 4, §12: a cooldown, so that junk tokens cannot make it hammer the IdP).
    before = fetches(idp)
    for _ in range(10):
        assert error(srv, "POST", "auth/jwt-jwks/login", {"role": "web", "jwt": bogus.sign(claims(**GOOD))}, token=None) == \
            (400, UNKNOWN_KID)
    refetched = fetches(idp) - before
    if srv.kind == "openbao":
        assert refetched >= 10, refetched
    else:
        assert refetched <= 2, f"cofferd fetched the JWKS {refetched} times for 10 logins with an unknown kid"
    login_ok(srv, "auth/jwt-jwks/login", {"role": "web", "jwt": second.sign(claims(**GOOD))})


def test_oidc_discovery_url(srv, idp):
    key = SigningKey("ES256", "k-disc")
    idp.keys = [key]
    idp.clear()
    enable_auth(srv, "jwt", "jwt-disc")
    srv.ok("POST", "auth/jwt-disc/config", {"oidc_discovery_url": idp.url, "oidc_discovery_ca_pem": idp.ca_pem,
                                            "jwt_supported_algs": ["ES256"]}, status=204)
    assert idp.requests("/.well-known/openid-configuration"), "the discovery document was not fetched"
    srv.ok("POST", "auth/jwt-disc/role/web", WEB_ROLE, status=204)
    auth = login_ok(srv, "auth/jwt-disc/login", {"role": "web", "jwt": key.sign(claims(**{**GOOD, "iss": idp.issuer}))})
    assert auth["metadata"]["role"] == "web"

    # A token whose iss is not the discovery document's issuer, and no bound_issuer configured.
    foreign = key.sign(claims(**{**GOOD, "iss": "https://issuer.example"}))
    code, answer = jwt_login(srv, "jwt-disc", foreign)
    if srv.kind == "openbao":
        assert code == 200, answer  # OpenBao's weakness (AUTH-HA-OPS.md §3.3 "Surprise"): accepted
    else:
        # Coffer enforces the discovery issuer (AUTH-HA-OPS.md §12).
        assert (code, answer) == (400, {"errors": [V + "invalid issuer (iss) claim"]}), (code, answer)
    # An algorithm outside jwt_supported_algs, from a key the IdP does publish.
    rsa = SigningKey("RS256", "k-disc-rsa")
    idp.keys = [key, rsa]
    assert error(srv, "POST", "auth/jwt-disc/login", {"role": "web", "jwt": rsa.sign(claims(**{**GOOD, "iss": idp.issuer}))},
                 token=None) == (400, V + "invalid algorithm (alg) header parameter: token signed with unexpected algorithm")


# ---- Shapes, side by side ----

def jwt_sequence(api):
    out = []

    def call(label, method, path, body=None, token="default"):
        r = api.raw(method, path, body, token)
        parsed = r.json() if r.content else None
        out.append((label, r.status_code, parsed))
        return parsed if isinstance(parsed, dict) else {}

    call("enable", "POST", "sys/auth/diff-jwt", {"type": "jwt"})
    call("config", "POST", "auth/diff-jwt/config", {"jwt_validation_pubkeys": [ES.public_pem], "bound_issuer": ISSUER})
    call("config read", "GET", "auth/diff-jwt/config")
    call("role", "POST", "auth/diff-jwt/role/web", WEB_ROLE)
    call("role read", "GET", "auth/diff-jwt/role/web")
    call("role list", "LIST", "auth/diff-jwt/role")
    auth = call("login", "POST", "auth/diff-jwt/login", {"role": "web", "jwt": ES.sign(claims(**GOOD))}, token=None).get("auth") or {}
    call("lookup-self", "GET", "auth/token/lookup-self", token=auth.get("client_token", "none"))
    call("entity", "GET", f"identity/entity/id/{auth.get('entity_id', 'none')}")
    call("expired", "POST", "auth/diff-jwt/login",
         {"role": "web", "jwt": ES.sign(claims(**GOOD, exp=int(time.time()) - 200, iat=int(time.time()) - 400))}, token=None)
    call("unknown role read", "GET", "auth/diff-jwt/role/nope")
    call("role delete", "DELETE", "auth/diff-jwt/role/web")
    return out


def test_same_shapes_as_openbao(bao_bin, cofferd_bin):
    assert_same_as_openbao(bao_bin, cofferd_bin, jwt_sequence, setup=lambda api: put_policy(
        api, "app1", 'path "secret/data/app1/*" { capabilities = ["read"] }\n'))
