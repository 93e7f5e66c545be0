"""Helpers for the auth-method tests (issue 17): signing keys and JWTs made here, a real HTTPS
identity provider on a loopback port (JWKS, OIDC discovery, an OIDC authorization-code provider with
PKCE), a stand-in for the Kubernetes TokenReview API, and a small client for one server.

The Kubernetes part is a **stand-in**: no cluster can run on this machine, so `FakeIdP` answers
`POST /apis/authentication.k8s.io/v1/tokenreviews` with the real `authentication.k8s.io/v1`
TokenReview schema, from a table of service-account tokens the test fills in, and logs what it got.

Every server here listens on 127.0.0.1 on a free port, in a thread of the test process, and is
stopped (listener closed) by `stop()`; the certificates live in a temp dir removed at the same time.
"""
import base64
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from conftest import start_bao_dev, start_cofferd_dev
from pkitools import Api, unwrap_multierror  # noqa: F401  (re-exported for the test files)

# The `auth` block of a login answer: these keys in this order (AUTH-HA-OPS.md §1.4).
AUTH_KEYS = ["client_token", "accessor", "policies", "token_policies", "metadata", "lease_duration", "renewable",
             "entity_id", "token_type", "orphan", "mfa_requirement", "num_uses"]
ENVELOPE_KEYS = ["request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"]
WRAP_INFO_KEYS = ["token", "accessor", "ttl", "creation_time", "creation_path"]
NOT_VALID_WRAPPING = "wrapping token is not valid or does not exist"
INVALID_SECRET_ID = "invalid role or secret ID"
INVALID_USERPASS = "invalid username or password"
KINDS = ["openbao", "cofferd"]


# ---- servers ----

def start(kind, bao_bin, cofferd_bin=None):
    """`bao server -dev` or `cofferd -dev` (root token "root") on a free loopback port, wrapped in an Api."""
    if kind == "openbao":
        return Api(start_bao_dev(bao_bin), kind, bao_bin)
    return Api(start_cofferd_dev(cofferd_bin), kind, bao_bin)


def server_param(request, bao_bin):
    """For module fixtures parametrized over KINDS; the cofferd binary is required only for "cofferd"
    (a missing one fails the test, it does not skip it)."""
    cofferd = request.getfixturevalue("cofferd_bin") if request.param == "cofferd" else None
    return start(request.param, bao_bin, cofferd)


def enable_auth(api, method_type, path=None):
    path = path or method_type
    api.ok("POST", f"sys/auth/{path}", {"type": method_type}, status=204)
    return accessor_of(api, path)


def accessor_of(api, path):
    return api.data("GET", "sys/auth")[f"{path}/"]["accessor"]


def put_policy(api, name, text):
    api.ok("PUT", f"sys/policies/acl/{name}", {"policy": text}, status=204)


def kv_put(api, path, data):
    """A KV v2 write under the dev servers' `secret/` mount."""
    api.ok("POST", f"secret/data/{path}", {"data": data})


def login(api, path, body):
    """(status, parsed) of an unauthenticated login."""
    return api("POST", path, body, token=None)


def login_ok(api, path, body):
    code, parsed = login(api, path, body)
    assert code == 200, (api.kind, path, code, parsed)
    check_auth_block(parsed)
    return parsed["auth"]


def check_auth_block(answer):
    """A login answer: the envelope with data null and the auth block's keys. Key order is not checked
    here (JSON clients do not depend on it); the differential tests check the auth block's order, which
    AUTH-HA-OPS.md §12 asks to copy."""
    assert sorted(answer) == sorted(ENVELOPE_KEYS), list(answer)
    assert answer["data"] is None and answer["lease_id"] == "" and answer["renewable"] is False, answer
    assert answer["lease_duration"] == 0 and answer["wrap_info"] is None, answer
    assert sorted(answer["auth"]) == sorted(AUTH_KEYS), list(answer["auth"])
    assert answer["auth"]["orphan"] is True, answer["auth"]


def error(api, method, path, body=None, token="default", headers=None):
    """(status, the single error message) of a refused request; a Go multierror is unwrapped."""
    r = api.raw(method, path, body, token, headers)
    try:
        parsed = r.json()
    except ValueError:
        raise AssertionError(f"{api.kind} {method} {path}: {r.status_code} not JSON: {r.text[:300]!r}")
    assert isinstance(parsed, dict) and isinstance(parsed.get("errors"), list), (api.kind, path, r.status_code, parsed)
    assert len(parsed["errors"]) == 1, (api.kind, path, r.status_code, parsed)
    return r.status_code, unwrap_multierror(parsed["errors"][0])


def as_client(api, token):
    """Another Api on the same server with `token` as its X-Vault-Token (the server is not stopped by it)."""
    other = Api(api.server, api.kind, api.bao_bin, token=token)
    return other


def key_shape(value):
    """Keys at every level and JSON types of the leaves (test_differential.shape, here to avoid a cycle)."""
    from test_differential import shape
    return shape(value)


def assert_same_as_openbao(bao_bin, cofferd_bin, sequence, setup=None, adjust=None, auth_order=False):
    """Runs `sequence(api)` (a list of (label, status, body)) against a fresh `bao server -dev` and a
    fresh `cofferd -dev`, after `setup(api)` on each, and asserts step by step the same status, the
    same key shape and, where OpenBao answers an error, the same text. `adjust(label, body)` may
    drop Coffer's documented additions from its body first; `auth_order` also checks the auth
    block's key order."""
    apis = [start("openbao", bao_bin), start("cofferd", bao_bin, cofferd_bin)]
    try:
        for api in apis:
            if setup:
                setup(api)
        expected, actual = (sequence(api) for api in apis)
    finally:
        for api in apis:
            api.close()
    problems = []
    for (label, bao_status, bao_body), (_, status, body) in zip(expected, actual):
        if adjust:
            adjust(label, body)
        if status != bao_status:
            problems.append(f"{label}: status {status}, OpenBao {bao_status}; body {body}, OpenBao {bao_body}")
        elif key_shape(body) != key_shape(bao_body):
            problems.append(f"{label}: shape\n    coffer  {key_shape(body)}\n    openbao {key_shape(bao_body)}")
        elif auth_order and isinstance(body, dict) and isinstance(body.get("auth"), dict) and list(body["auth"]) != AUTH_KEYS:
            problems.append(f"{label}: auth keys in the order {list(body['auth'])}")
        elif isinstance(bao_body, dict) and "errors" in bao_body and body != bao_body:
            problems.append(f"{label}: errors {body['errors']}, OpenBao {bao_body['errors']}")
    assert len(actual) == len(expected)
    assert not problems, "differences from OpenBao 2.7.2:\n" + "\n".join(problems)


# ---- the bao CLI with a private HOME (so `bao login` stores its token where the test can see it) ----

class Cli:
    def __init__(self, bao_bin, addr):
        self.bao_bin, self.addr = bao_bin, addr
        self.home = tempfile.mkdtemp(prefix="bao-cli-home-")

    def __call__(self, *args, token=None, check=True, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        e.update(BAO_ADDR=self.addr, HOME=self.home)
        if token:
            e["BAO_TOKEN"] = token
        e.update(env or {})
        p = subprocess.run([self.bao_bin, *args], env=e, capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"bao {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p.returncode, p.stdout, p.stderr

    def json(self, *args, token=None):
        _, out, _ = self(*args, token=token, env={"BAO_FORMAT": "json"})
        return json.loads(out)

    def close(self):
        shutil.rmtree(self.home, ignore_errors=True)


# ---- keys and JWTs ----

def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """A private key of one JWS algorithm (ES256 P-256, ES384 P-384, RS256 2048, PS256, EdDSA Ed25519)."""

    def __init__(self, alg="ES256", kid=None):
        self.alg = alg
        self.kid = kid or secrets.token_hex(8)
        if alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES384":
            self.private = ec.generate_private_key(ec.SECP384R1())
        elif alg in ("RS256", "RS384", "RS512", "PS256"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)
        self.public = self.private.public_key()

    @property
    def public_pem(self):
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwk(self):
        algorithm = jwt.get_algorithm_by_name(self.alg)
        key = algorithm.to_jwk(self.public, as_dict=True)
        return {**key, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims, headers=None, kid=True):
        h = dict(headers or {})
        if kid:
            h.setdefault("kid", self.kid)
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=h)


def claims(**over):
    """A valid claim set: iat/nbf now, exp in 5 minutes; `None` removes a claim."""
    now = int(time.time())
    c = {"iat": now, "nbf": now, "exp": now + 300}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def unsigned_token(claims_, alg="none"):
    """`alg: none`: header and payload, empty signature."""
    return f"{b64url(json.dumps({'alg': alg, 'typ': 'JWT'}))}.{b64url(json.dumps(claims_))}."


def hs256_with_public_key(claims_, key):
    """The algorithm-confusion attack: HS256 with the verifier's public key (PEM) as the HMAC secret."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}))
    payload = b64url(json.dumps(claims_))
    mac = hmac.new(key.public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def tamper_signature(token):
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def k8s_service_account_token(key, namespace, name, uid, audiences=("https://kubernetes.default.svc",),
                              issuer="https://kubernetes.default.svc.cluster.local", lifetime=600, aud_as_string=False):
    """A projected service-account token shaped as a kubelet mounts it (kubernetes.io claims)."""
    now = int(time.time())
    body = {"aud": None if audiences is None else audiences[0] if aud_as_string else list(audiences), "exp": now + lifetime, "iat": now, "nbf": now,
            "iss": issuer, "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace,
                              "pod": {"name": f"{name}-7d9c6b5f4-x2x9p", "uid": str(uuid.uuid4())},
                              "serviceaccount": {"name": name, "uid": uid}}}
    if audiences is None:
        del body["aud"]
    return key.sign(body)


# ---- TLS material for the loopback IdP ----

def make_tls(directory):
    """A CA and a server certificate for 127.0.0.1/localhost signed by it; returns (ca pem, cert path, key path)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Coffer test IdP CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "idp.crt"), os.path.join(directory, "idp.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_path, key_path


# ---- the identity provider ----

class FakeIdP:
    """An HTTPS server on 127.0.0.1:<free port> (CA in `ca_pem`):

    * `GET /jwks`: the JWK set of `self.keys` (replace the list to rotate keys);
    * `GET /.well-known/openid-configuration`: issuer (= `self.issuer`), jwks_uri, authorization_endpoint,
      token_endpoint;
    * `GET /authorize`: an OIDC provider that logs everyone in as `self.oidc_subject`: checks the client
      id, redirect URI and PKCE challenge method, then redirects (302) to redirect_uri?code=…&state=…;
    * `POST /token`: checks the code (single use), redirect_uri, client id/secret (Basic or form) and the
      PKCE code_verifier against the code_challenge (S256); answers an id_token signed by `self.keys[0]`
      with the nonce of the authorization request, aud = client id;
    * `POST /apis/authentication.k8s.io/v1/tokenreviews`: a **stand-in** for the Kubernetes API server's
      TokenReview (`authentication.k8s.io/v1`); tokens listed in `self.service_accounts`
      (token → (namespace, name, uid)) are authenticated, others are not.

    Every request is appended to `self.log` as a dict (method, path, query, headers, body); OIDC
    protocol violations to `self.violations` (the test asserts it stays empty).
    """

    def __init__(self, keys=None):
        self.dir = tempfile.mkdtemp(prefix="coffer-idp-")
        self.ca_pem, cert, key = make_tls(self.dir)
        self.keys = list(keys or [])
        self.log = []
        self.violations = []
        self.lock = threading.Lock()
        self.client_id, self.client_secret = "coffer-client", secrets.token_urlsafe(24)
        self.oidc_subject = "alice@example.com"
        self.oidc_extra_claims = {"email": "alice@example.com", "groups": ["eng"]}
        self.codes = {}
        self.wrong_nonce = False  # the id_token carries another nonce than the authorization request's
        self.service_accounts = {}
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body=None, headers=None):
                data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                entry = {"method": self.command, "path": parsed.path, "query": urllib.parse.parse_qs(parsed.query),
                         "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode(errors="replace")}
                with idp.lock:
                    idp.log.append(entry)
                route = (self.command, parsed.path)
                if route == ("GET", "/jwks"):
                    return self._reply(200, {"keys": [k.jwk() for k in list(idp.keys)]})
                if route == ("GET", "/.well-known/openid-configuration"):
                    return self._reply(200, idp.discovery())
                if route == ("GET", "/authorize"):
                    return idp._authorize(self, entry)
                if route == ("POST", "/token"):
                    return idp._token(self, entry)
                if route == ("POST", "/apis/authentication.k8s.io/v1/tokenreviews"):
                    return idp._token_review(self, entry)
                return self._reply(404, {"error": "not found"})

            do_GET = do_POST = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.issuer = self.url
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.ca_file = os.path.join(self.dir, "ca.pem")
        with open(self.ca_file, "w") as f:
            f.write(self.ca_pem)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- log --
    def requests(self, path, method=None):
        with self.lock:
            return [e for e in self.log if e["path"] == path and (method is None or e["method"] == method)]

    def clear(self):
        with self.lock:
            self.log.clear()
            self.violations.clear()

    # -- OIDC --
    def discovery(self):
        return {"issuer": self.issuer, "jwks_uri": f"{self.url}/jwks",
                "authorization_endpoint": f"{self.url}/authorize", "token_endpoint": f"{self.url}/token",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys} or {"RS256"}),
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"], "claims_supported": ["sub", "iss", "aud", "email", "groups"]}

    def violation(self, message):
        with self.lock:
            self.violations.append(message)

    def _authorize(self, handler, entry):
        q = {k: v[0] for k, v in entry["query"].items()}
        if q.get("client_id") != self.client_id:
            self.violation(f"authorize: client_id {q.get('client_id')!r}")
            return handler._reply(400, {"error": "invalid_client"})
        if q.get("response_type") != "code" or "openid" not in q.get("scope", "").split():
            self.violation(f"authorize: response_type {q.get('response_type')!r}, scope {q.get('scope')!r}")
            return handler._reply(400, {"error": "invalid_request"})
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            self.violation(f"authorize: no S256 PKCE challenge ({q.get('code_challenge_method')!r})")
        if not q.get("nonce") or not q.get("state") or not q.get("redirect_uri"):
            self.violation(f"authorize: missing nonce/state/redirect_uri in {sorted(q)}")
            return handler._reply(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = q
        target = q["redirect_uri"] + ("&" if "?" in q["redirect_uri"] else "?") + urllib.parse.urlencode(
            {"code": code, "state": q["state"]})
        return handler._reply(302, None, {"Location": target})

    def _token(self, handler, entry):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(entry["body"]).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = entry["headers"].get("authorization", "")
        if basic.startswith("Basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            client_id, client_secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
        if client_id != self.client_id or client_secret != self.client_secret:
            return handler._reply(401, {"error": "invalid_client"})
        if form.get("grant_type") != "authorization_code":
            self.violation(f"token: grant_type {form.get('grant_type')!r}")
            return handler._reply(400, {"error": "unsupported_grant_type"})
        with self.lock:
            request = self.codes.pop(form.get("code"), None)
        if request is None:  # an unknown or reused code: a client error, not a protocol violation
            return handler._reply(400, {"error": "invalid_grant"})
        if form.get("redirect_uri") != request["redirect_uri"]:
            self.violation(f"token: redirect_uri {form.get('redirect_uri')!r} != {request['redirect_uri']!r}")
            return handler._reply(400, {"error": "invalid_grant"})
        challenge = request.get("code_challenge")
        verifier = form.get("code_verifier")
        if challenge:
            if not verifier or b64url(hashlib.sha256(verifier.encode()).digest()) != challenge:
                self.violation("token: PKCE code_verifier does not match the code_challenge")
                return handler._reply(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
        now = int(time.time())
        key = self.keys[0]
        id_token = key.sign({"iss": self.issuer, "sub": self.oidc_subject, "aud": self.client_id, "azp": self.client_id,
                             "iat": now, "exp": now + 300, "nonce": "n_forged" if self.wrong_nonce else request["nonce"], **self.oidc_extra_claims})
        return handler._reply(200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                    "expires_in": 300, "id_token": id_token})

    # -- Kubernetes TokenReview (stand-in) --
    def _token_review(self, handler, entry):
        if not entry["headers"].get("authorization", "").startswith("Bearer "):
            return handler._reply(401, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        try:
            review = json.loads(entry["body"])
            spec = review["spec"]
            token = spec["token"]
        except (ValueError, KeyError, TypeError):
            return handler._reply(400, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": "bad TokenReview", "reason": "BadRequest", "code": 400})
        audiences = spec.get("audiences") or []
        answer = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": None},
                  "spec": {"token": token, **({"audiences": audiences} if audiences else {})}}
        account = self.service_accounts.get(token)
        if account:
            namespace, name, uid = account
            answer["status"] = {"authenticated": True,
                                "user": {"username": f"system:serviceaccount:{namespace}:{name}", "uid": uid,
                                         "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                                    "system:authenticated"]},
                                **({"audiences": audiences} if audiences else {})}
        else:
            answer["status"] = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
        return handler._reply(201, answer)


@pytest.fixture(scope="module")
def idp():
    server = FakeIdP([SigningKey("ES256")])
    yield server
    server.stop()
