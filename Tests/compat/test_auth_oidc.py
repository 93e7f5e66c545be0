"""The OIDC authorization-code flow (issue 17 item 3, `oidc` type) driven end to end by a test client:
auth_url from the server, the browser step against authtools.FakeIdP (a real HTTPS OIDC provider on a
loopback port that checks PKCE S256, the client secret and the redirect URI, and signs an id_token
carrying the nonce), then the callback with state and code. Observed OpenBao 2.7.2 answers are the
expectations; each test runs against `bao server -dev` and `cofferd -dev`."""
import json
import urllib.parse

import pytest
import requests

from authtools import KINDS, SigningKey, as_client, check_auth_block, enable_auth, error, idp, kv_put, put_policy, server_param  # noqa: F401

REDIRECT = "http://127.0.0.1:8250/oidc/callback"
STATE_GONE = "OpenBao login failed. Expired or missing OAuth state."


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    put_policy(api, "people", 'path "secret/data/people/*" { capabilities = ["read"] }\n')
    kv_put(api, "people/handbook", {"text": "welcome"})
    yield api
    api.close()


@pytest.fixture(scope="module")
def oidc_mount(srv, idp):
    idp.keys = [SigningKey("RS256", "oidc-rs")]  # RS256: the OIDC default algorithm
    enable_auth(srv, "oidc", "oidc")
    srv.ok("POST", "auth/oidc/config", {"oidc_discovery_url": idp.url, "oidc_discovery_ca_pem": idp.ca_pem,
                                        "oidc_client_id": idp.client_id, "oidc_client_secret": idp.client_secret,
                                        "default_role": "people"}, status=204)
    srv.ok("POST", "auth/oidc/role/people", {"role_type": "oidc", "allowed_redirect_uris": [REDIRECT], "user_claim": "sub",
                                             "groups_claim": "groups", "claim_mappings": {"email": "email"},
                                             "token_policies": ["people"], "token_ttl": "1h"}, status=204)
    return "oidc"


def browser(idp, auth_url):
    """What the user's browser does: open the provider's page (the fake logs in at once) and follow the
    redirect to the callback URI, here only parsed. Returns the callback's query parameters."""
    r = requests.get(auth_url, verify=idp.ca_file, allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text)
    location = r.headers["Location"]
    assert location.startswith(REDIRECT + "?"), location
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def auth_url(srv, role="people", redirect=REDIRECT):
    code, answer = srv("POST", "auth/oidc/oidc/auth_url", {"role": role, "redirect_uri": redirect}, token=None)
    assert code == 200, (code, answer)
    return answer["data"]["auth_url"]


def callback(srv, params):
    return srv("GET", "auth/oidc/oidc/callback?" + urllib.parse.urlencode(params), token=None)


def test_code_flow_end_to_end(srv, idp, oidc_mount):
    idp.clear()
    url = auth_url(srv)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert url.startswith(f"{idp.url}/authorize?"), url
    assert query["client_id"] == idp.client_id and query["redirect_uri"] == REDIRECT, query
    assert query["response_type"] == "code" and "openid" in query["scope"].split(), query
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43, query  # PKCE
    assert query["state"] and query["nonce"], query

    params = browser(idp, url)
    assert params["state"] == query["state"]
    code, answer = callback(srv, params)
    assert code == 200, (code, answer)
    check_auth_block(answer)
    auth = answer["auth"]
    assert auth["policies"] == ["default", "people"] and auth["lease_duration"] == 3600, auth
    assert auth["metadata"] == {"email": "alice@example.com", "role": "people"}, auth
    assert as_client(srv, auth["client_token"]).data("GET", "secret/data/people/handbook")["data"] == {"text": "welcome"}

    # The IdP saw one code exchange with the verifier that matches the challenge, and the client secret.
    assert not idp.violations, idp.violations
    exchanges = idp.requests("/token", "POST")
    assert len(exchanges) == 1, exchanges
    form = dict(urllib.parse.parse_qsl(exchanges[0]["body"]))
    assert form["grant_type"] == "authorization_code" and form["code"] == params["code"] and form["code_verifier"], form
    assert idp.client_secret not in json.dumps(answer)

    # The state is single use.
    assert callback(srv, params) == (400, {"errors": [STATE_GONE]})
    assert callback(srv, {"state": "st_forged", "code": "x"}) == (400, {"errors": [STATE_GONE]})


def test_refusals(srv, idp, oidc_mount):
    # A redirect URI that is not allowed: no URL (OpenBao answers 200 with an empty auth_url).
    code, answer = srv("POST", "auth/oidc/oidc/auth_url", {"role": "people", "redirect_uri": "http://evil.example/cb"},
                       token=None)
    assert code == 200 and answer["data"] == {"auth_url": ""}, answer

    # A code the IdP does not know.
    params = browser(idp, auth_url(srv))
    code, message = error(srv, "GET", "auth/oidc/oidc/callback?" + urllib.parse.urlencode({**params, "code": "wrong"}),
                          token=None)
    assert code == 400 and message.startswith("OpenBao login failed. Error exchanging oidc code"), message
    assert params["code"] not in message

    # An id_token whose nonce is not the request's.
    idp.wrong_nonce = True
    try:
        params = browser(idp, auth_url(srv))
        code, answer = callback(srv, params)
    finally:
        idp.wrong_nonce = False
    assert code == 400 and "nonce" in answer["errors"][0].lower(), (code, answer)
    assert "auth" not in answer

    # Unknown role.
    assert error(srv, "POST", "auth/oidc/oidc/auth_url", {"role": "nope", "redirect_uri": REDIRECT}, token=None) == \
        (400, 'role "nope" could not be found')
