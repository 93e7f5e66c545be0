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


def test_passwords_secret_ids_jwts_and_tokens_reach_no_log(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
    a = server.addr + "/v1/"
    audit_log = os.path.join(workdir, "audit.log")
    secrets_seen = [PASSWORD, WRONG_PASSWORD, CUSTOM_SECRET_ID]
    key = SigningKey("ES256")
    try:
        init = requests.put(a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        assert requests.put(a + "sys/unseal", json={"key": init["keys"][0]}).json()["sealed"] is False
        root = {"X-Vault-Token": init["root_token"]}

        def ok(method, path, body=None, headers=root, status=(200, 204)):
            r = requests.request(method, a + path, json=body, headers=headers)
            assert r.status_code in status, (method, path, r.status_code, r.text)
            return r.json() if r.content else None

        ok("POST", "sys/audit/file", {"type": "file", "options": {"file_path": audit_log}})
        for method in ("approle", "userpass", "jwt"):
            ok("POST", f"sys/auth/{method}", {"type": method})

        # userpass: a login, a wrong password.
        ok("POST", "auth/userpass/users/alice", {"password": PASSWORD, "token_policies": ["default"]})
        secrets_seen.append(ok("POST", "auth/userpass/login/alice", {"password": PASSWORD}, headers={})["auth"]["client_token"])
        ok("POST", "auth/userpass/login/alice", {"password": WRONG_PASSWORD}, headers={}, status=(400,))

        # AppRole: generated and custom secret ids, one delivered wrapped; a wrong one.
        ok("POST", "auth/approle/role/web", {"token_policies": ["default"]})
        role_id = ok("GET", "auth/approle/role/web/role-id")["data"]["role_id"]
        generated = ok("POST", "auth/approle/role/web/secret-id")["data"]
        secrets_seen.append(generated["secret_id"])
        ok("POST", "auth/approle/role/web/custom-secret-id", {"secret_id": CUSTOM_SECRET_ID})
        wrapped = ok("POST", "auth/approle/role/web/secret-id", headers={**root, "X-Vault-Wrap-TTL": "60s"})["wrap_info"]["token"]
        secrets_seen.append(wrapped)
        unwrapped = ok("POST", "sys/wrapping/unwrap", {"token": wrapped})["data"]["secret_id"]
        secrets_seen.append(unwrapped)
        for sid in (generated["secret_id"], CUSTOM_SECRET_ID, unwrapped):
            secrets_seen.append(ok("POST", "auth/approle/login", {"role_id": role_id, "secret_id": sid}, headers={})
                                ["auth"]["client_token"])
        ok("POST", "auth/approle/login", {"role_id": role_id, "secret_id": generated["secret_id"] + "x"}, headers={},
           status=(400,))

        # JWT: a login, an expired one, one signed by an unknown key.
        ok("POST", "auth/jwt/config", {"jwt_validation_pubkeys": [key.public_pem]})
        ok("POST", "auth/jwt/role/web", {"role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub",
                                         "token_policies": ["default"]})
        good = key.sign(claims(aud="coffer", sub="svc"))
        expired = key.sign(claims(aud="coffer", sub="svc", exp=int(time.time()) - 300, iat=int(time.time()) - 600))
        forged = SigningKey("ES256").sign(claims(aud="coffer", sub="svc"))
        secrets_seen.append(ok("POST", "auth/jwt/login", {"role": "web", "jwt": good}, headers={})["auth"]["client_token"])
        ok("POST", "auth/jwt/login", {"role": "web", "jwt": expired}, headers={}, status=(400,))
        ok("POST", "auth/jwt/login", {"role": "web", "jwt": forged}, headers={}, status=(400,))
        for token in (good, expired, forged):
            secrets_seen += [token, token.split(".")[2]]  # whole, and the signature alone
    finally:
        server.stop()

    deadline = time.monotonic() + 5
    while True:
        records = open(audit_log).read() if os.path.exists(audit_log) else ""
        if records.count("auth/jwt/login") >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # The logins were audited (requests and responses), so the absence below means something.
    for path in ("auth/userpass/login/alice", "auth/approle/login", "auth/jwt/login", "sys/wrapping/unwrap"):
        assert records.count(path) >= 2, f"{path} was not audited"
    output = server.output()
    for value in secrets_seen:
        assert value not in records, f"{value[:12]}… reached the audit log"
        assert value not in output, f"{value[:12]}… reached cofferd's log"
