"""Login credentials never reach a log (issue 17 "Bad input"): the password, the secret id, the JWT and
the tokens handed out must not appear raw in the audit log nor in cofferd's own output (at debug
level), for logins that succeed and logins that fail.

cofferd only: OpenBao 2.7.2 cannot enable an audit device over the API (AUTH-HA-OPS.md §0), so there
is nothing to compare with; the audit device is enabled the way test_no_value_leaks.py does it."""
import os
import time

import requests

from authtools import SigningKey, claims
from conftest import start_cofferd_config

CONFIG = """
storage "memory" {{}}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
log_level = "debug"
"""
PASSWORD = "pw-LEAK-5e1f0c9a"
WRONG_PASSWORD = "pw-WRONG-LEAK-77a3d2"
CUSTOM_SECRET_ID = "sid-LEAK-0b7c41e2"


class AuditedCofferd:
    """cofferd from a config file (memory storage, debug log), initialised, unsealed, with a file audit device."""

    def __init__(self, cofferd_bin, workdir):
        self.server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
        self.a = self.server.addr + "/v1/"
        self.audit_log = os.path.join(workdir, "audit.log")
        init = requests.put(self.a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        assert requests.put(self.a + "sys/unseal", json={"key": init["keys"][0]}).json()["sealed"] is False
        self.root = {"X-Vault-Token": init["root_token"]}
        self.ok("POST", "sys/audit/file", {"type": "file", "options": {"file_path": self.audit_log}})

    def ok(self, method, path, body=None, headers="root", status=(200, 204)):
        r = requests.request(method, self.a + path, json=body, headers=self.root if headers == "root" else headers)
        assert r.status_code in status, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def check(self, secrets, audited):
        """Stops the server; then none of `secrets` is in the audit log or its output, and each of `audited`
        paths has a request and a response record (so the absence means something)."""
        self.server.stop()
        deadline = time.monotonic() + 5
        while True:
            records = open(self.audit_log).read() if os.path.exists(self.audit_log) else ""
            if all(records.count(p) >= 2 for p in audited) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for path in audited:
            assert records.count(path) >= 2, f"{path} was not audited"
        output = self.server.output()
        for value in secrets:
            assert value not in records, f"{value[:12]}… reached the audit log"
            assert value not in output, f"{value[:12]}… reached cofferd's log"


def test_passwords_secret_ids_and_tokens_reach_no_log(cofferd_bin, workdir):
    c = AuditedCofferd(cofferd_bin, workdir)
    secrets = [PASSWORD, WRONG_PASSWORD, CUSTOM_SECRET_ID]
    try:
        for method in ("approle", "userpass"):
            c.ok("POST", f"sys/auth/{method}", {"type": method})
        # userpass: a login, a wrong password, a password change.
        c.ok("POST", "auth/userpass/users/alice", {"password": PASSWORD, "token_policies": ["default"]})
        secrets.append(c.ok("POST", "auth/userpass/login/alice", {"password": PASSWORD}, headers={})["auth"]["client_token"])
        c.ok("POST", "auth/userpass/login/alice", {"password": WRONG_PASSWORD}, headers={}, status=(400,))
        c.ok("POST", "auth/userpass/users/alice/password", {"password": PASSWORD + "-2"})
        secrets.append(PASSWORD + "-2")

        # AppRole: generated and custom secret ids, one delivered wrapped; a wrong one.
        c.ok("POST", "auth/approle/role/web", {"token_policies": ["default"]})
        role_id = c.ok("GET", "auth/approle/role/web/role-id")["data"]["role_id"]
        generated = c.ok("POST", "auth/approle/role/web/secret-id")["data"]
        secrets.append(generated["secret_id"])
        c.ok("POST", "auth/approle/role/web/custom-secret-id", {"secret_id": CUSTOM_SECRET_ID})
        wrapped = c.ok("POST", "auth/approle/role/web/secret-id", headers={**c.root, "X-Vault-Wrap-TTL": "60s"})
        secrets.append(wrapped["wrap_info"]["token"])
        unwrapped = c.ok("POST", "sys/wrapping/unwrap", {"token": wrapped["wrap_info"]["token"]})["data"]["secret_id"]
        secrets.append(unwrapped)
        for sid in (generated["secret_id"], CUSTOM_SECRET_ID, unwrapped):
            secrets.append(c.ok("POST", "auth/approle/login", {"role_id": role_id, "secret_id": sid}, headers={})
                           ["auth"]["client_token"])
        c.ok("POST", "auth/approle/login", {"role_id": role_id, "secret_id": generated["secret_id"] + "x"}, headers={},
             status=(400,))
        c.ok("POST", "auth/approle/role/web/secret-id/lookup", {"secret_id": generated["secret_id"]})
    finally:
        c.server.stop()
    c.check(secrets, ["auth/userpass/login/alice", "auth/approle/login", "sys/wrapping/unwrap",
                      "auth/approle/role/web/custom-secret-id"])


def test_jwts_and_tokens_reach_no_log(cofferd_bin, workdir):
    c = AuditedCofferd(cofferd_bin, workdir)
    key = SigningKey("ES256")
    secrets = []
    try:
        c.ok("POST", "sys/auth/jwt", {"type": "jwt"})
        c.ok("POST", "auth/jwt/config", {"jwt_validation_pubkeys": [key.public_pem]})
        c.ok("POST", "auth/jwt/role/web", {"role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub",
                                           "token_policies": ["default"]})
        good = key.sign(claims(aud="coffer", sub="svc"))
        expired = key.sign(claims(aud="coffer", sub="svc", exp=int(time.time()) - 300, iat=int(time.time()) - 600))
        forged = SigningKey("ES256").sign(claims(aud="coffer", sub="svc"))
        secrets.append(c.ok("POST", "auth/jwt/login", {"role": "web", "jwt": good}, headers={})["auth"]["client_token"])
        c.ok("POST", "auth/jwt/login", {"role": "web", "jwt": expired}, headers={}, status=(400,))
        c.ok("POST", "auth/jwt/login", {"role": "web", "jwt": forged}, headers={}, status=(400,))
        for token in (good, expired, forged):
            secrets += [token, token.split(".")[1], token.split(".")[2]]  # whole, the claims, the signature
    finally:
        c.server.stop()
    c.check(secrets, ["auth/jwt/login"])
