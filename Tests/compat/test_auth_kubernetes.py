"""The Kubernetes auth method (issue 17 item 4) against OpenBao 2.7.2's observed behaviour
(/work/shared/design/AUTH-HA-OPS.md §3.4).

No cluster can run on this machine: the Kubernetes API here is a **stand-in**, authtools.FakeIdP's
`POST /apis/authentication.k8s.io/v1/tokenreviews` over real HTTPS on a loopback port, answering the
real `authentication.k8s.io/v1` TokenReview schema for service-account tokens the test registers, and
logging each request (path, Authorization header, body). The service-account JWTs are shaped as a
kubelet mounts them (projected tokens with the kubernetes.io claims), signed by keys made here.

Each test runs against `bao server -dev` and `cofferd -dev` with the same expectations. Where Coffer
differs on purpose (a string `aud`, legal per RFC 7519, is accepted: AUTH-HA-OPS.md §12), the test
says so and asserts each server's documented answer.
"""
import json

import pytest

from authtools import (KINDS, SigningKey, as_client, check_auth_block, enable_auth, error, idp, k8s_service_account_token,
                       kv_put, login, put_policy, server_param)  # noqa: F401

SA_KEY = SigningKey("RS256")
UID = "1111-2222-3333"
REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


@pytest.fixture(scope="module", params=KINDS)
def srv(request, bao_bin):
    api = server_param(request, bao_bin)
    put_policy(api, "web", 'path "secret/data/web/*" { capabilities = ["read"] }\n')
    kv_put(api, "web/config", {"dsn": "postgres://web"})
    kv_put(api, "billing/config", {"dsn": "postgres://billing"})
    yield api
    api.close()


@pytest.fixture(scope="module")
def k8s(srv, idp):
    enable_auth(srv, "kubernetes", "kubernetes")
    srv.ok("POST", "auth/kubernetes/config", {"kubernetes_host": idp.url, "kubernetes_ca_cert": idp.ca_pem}, status=204)
    srv.ok("POST", "auth/kubernetes/role/web", {"bound_service_account_names": ["web"], "bound_service_account_namespaces": ["prod"],
                                                "audience": "coffer", "token_policies": ["web"], "token_ttl": "20m"}, status=204)
    return "kubernetes"


def sa_token(idp, namespace="prod", name="web", uid=UID, registered=True, **kw):
    token = k8s_service_account_token(SA_KEY, namespace, name, uid, **kw)
    if registered:
        idp.service_accounts[token] = (namespace, name, uid)
    return token


def test_config_and_role_reads(srv, idp, k8s):
    config = srv.data("GET", "auth/kubernetes/config")
    assert sorted(config) == ["disable_iss_validation", "disable_local_ca_jwt", "issuer", "kubernetes_ca_cert",
                              "kubernetes_host", "pem_keys", "token_reviewer_jwt_set"], sorted(config)
    assert config["kubernetes_host"] == idp.url and config["kubernetes_ca_cert"].strip() == idp.ca_pem.strip(), config
    assert config["token_reviewer_jwt_set"] is False and config["pem_keys"] == [], config
    role = srv.data("GET", "auth/kubernetes/role/web")
    assert role["bound_service_account_names"] == ["web"] and role["bound_service_account_namespaces"] == ["prod"], role
    assert role["audience"] == "coffer" and role["alias_name_source"] == "serviceaccount_uid" and role["token_ttl"] == 1200


def test_login_asks_tokenreview_with_the_clients_own_jwt(srv, idp, k8s):
    idp.clear()
    token = sa_token(idp, audiences=["coffer"])
    code, answer = login(srv, "auth/kubernetes/login", {"role": "web", "jwt": token})
    assert code == 200, (code, answer)
    check_auth_block(answer)
    auth = answer["auth"]
    assert auth["metadata"] == {"role": "web", "service_account_name": "web", "service_account_namespace": "prod",
                                "service_account_secret_name": "", "service_account_uid": UID}, auth
    assert auth["policies"] == ["default", "web"] and auth["lease_duration"] == 1200, auth
    client = as_client(srv, auth["client_token"])
    assert client.data("GET", "secret/data/web/config")["data"] == {"dsn": "postgres://web"}
    assert client("GET", "secret/data/billing/config")[0] == 403

    # What the stand-in API received: one TokenReview, authorised by the client's JWT (no reviewer JWT configured).
    reviews = idp.requests(REVIEWS)
    assert len(reviews) == 1, idp.log
    review = reviews[0]
    assert review["method"] == "POST" and review["headers"]["authorization"] == f"Bearer {token}", review["headers"]
    assert review["headers"]["content-type"].startswith("application/json"), review["headers"]
    body = json.loads(review["body"])
    assert body["spec"]["token"] == token and body["spec"]["audiences"] == ["coffer"], body

    # Same service account again: the same entity, aliased by the service account's uid.
    again = login(srv, "auth/kubernetes/login", {"role": "web", "jwt": sa_token(idp, audiences=["coffer"])})[1]["auth"]
    assert again["entity_id"] == auth["entity_id"]
    aliases = srv.data("GET", f"identity/entity/id/{auth['entity_id']}")["aliases"]
    assert [(a["name"], a["mount_type"]) for a in aliases] == [(UID, "kubernetes")], aliases


def test_token_reviewer_jwt_authorises_the_review(srv, idp):
    enable_auth(srv, "kubernetes", "k8s-reviewer")
    srv.ok("POST", "auth/k8s-reviewer/config", {"kubernetes_host": idp.url, "kubernetes_ca_cert": idp.ca_pem,
                                                "token_reviewer_jwt": "reviewer-jwt-0123456789"}, status=204)
    assert srv.data("GET", "auth/k8s-reviewer/config")["token_reviewer_jwt_set"] is True
    srv.ok("POST", "auth/k8s-reviewer/role/web", {"bound_service_account_names": ["web"],
                                                  "bound_service_account_namespaces": ["prod"], "token_policies": ["web"]},
           status=204)
    idp.clear()
    token = sa_token(idp)
    code, answer = login(srv, "auth/k8s-reviewer/login", {"role": "web", "jwt": token})
    assert code == 200, answer
    reviews = idp.requests(REVIEWS)
    assert [r["headers"]["authorization"] for r in reviews] == ["Bearer reviewer-jwt-0123456789"], reviews
    assert json.loads(reviews[0]["body"])["spec"]["token"] == token
    assert "reviewer-jwt-0123456789" not in json.dumps(srv.data("GET", "auth/k8s-reviewer/config"))


def test_refusals_name_the_check(srv, idp, k8s):
    idp.clear()
    cases = [
        # (what, token, expected status and message, TokenReview sent?)
        ("namespace not bound", sa_token(idp, namespace="dev", audiences=["coffer"]), (403, "namespace not authorized"), False),
        ("service account not bound", sa_token(idp, name="db", audiences=["coffer"]),
         (403, "service account name not authorized"), False),
        ("audience not the role's", sa_token(idp, audiences=["other"]),
         (403, "invalid audience (aud) claim: audience claim does not match any expected audience"), False),
        ("no audience", sa_token(idp, audiences=None),
         (403, "invalid audience (aud) claim: audience claim does not match any expected audience"), False),
        ("TokenReview says not authenticated", sa_token(idp, registered=False, audiences=["coffer"]),
         (403, "permission denied"), True),
    ]
    problems = []
    for what, token, expected, reviewed in cases:
        before = len(idp.requests(REVIEWS))
        got = error(srv, "POST", "auth/kubernetes/login", {"role": "web", "jwt": token}, token=None)
        sent = len(idp.requests(REVIEWS)) > before
        if srv.kind == "cofferd" and what == "TokenReview says not authenticated":
            # Coffer may say which check failed (AUTH-HA-OPS.md §9 item 7); the status is OpenBao's.
            if got[0] != 403:
                problems.append(f"{what}: expected 403, got {got}")
        elif got != expected:
            problems.append(f"{what}: expected {expected}, got {got}")
        if sent != reviewed:
            problems.append(f"{what}: TokenReview {'sent' if sent else 'not sent'}, OpenBao {'sends' if reviewed else 'does not'}")
    # The review answers for another service account than the JWT names.
    token = sa_token(idp, audiences=["coffer"])
    idp.service_accounts[token] = ("prod", "api", UID)
    got = error(srv, "POST", "auth/kubernetes/login", {"role": "web", "jwt": token}, token=None)
    if got[0] != 403:
        problems.append(f"TokenReview for another account: expected 403, got {got}")
    assert not problems, f"{srv.kind}:\n" + "\n".join(problems)
    assert error(srv, "POST", "auth/kubernetes/login", {"role": "nope", "jwt": token}, token=None) == \
        (400, 'invalid role name "nope"')


def test_string_audience(srv, idp, k8s):
    token = sa_token(idp, audiences=["coffer"], aud_as_string=True)
    code, answer = login(srv, "auth/kubernetes/login", {"role": "web", "jwt": token})
    if srv.kind == "openbao":
        # OpenBao's bug (AUTH-HA-OPS.md §3.4): a string aud, legal per RFC 7519, fails decoding with a 500.
        assert (code, answer) == (500, {"errors": [
            "decoding failed due to the following error(s):\n\n'aud' source data must be an array or slice, got string"]})
    else:
        assert code == 200, (code, answer)  # Coffer accepts it (AUTH-HA-OPS.md §12)
        assert answer["auth"]["metadata"]["service_account_name"] == "web"


def test_unconfigured_mount(srv, idp):
    enable_auth(srv, "kubernetes", "k8s-bare")
    assert srv("GET", "auth/k8s-bare/config") == (404, {"errors": []})
    # Without a CA the host's certificate cannot be checked (OpenBao names the in-pod CA file it looked for).
    code, message = error(srv, "POST", "auth/k8s-bare/config", {"kubernetes_host": idp.url})
    assert code == 400, (code, message)
