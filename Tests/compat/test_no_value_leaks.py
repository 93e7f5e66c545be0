"""Values never reach error texts, cofferd's log or the audit log (issue 13 item 7).

A marker is written into every field of many malformed requests, as the wrong type or out of range,
against a real cofferd with a file audit device. Each answer is a 400 (or 404/405 where the path
itself is wrong); the marker must appear in no answer, not in cofferd's output and not in the audit
log, whose values are HMAC'd and whose error texts name fields, never values. The Swift test
FieldSweepTests does the same for every declared field of every backend through the wire form."""
import json
import os

import requests

from conftest import start_cofferd_config

MARKER = "LEAK-MARKER-9c4d71"

CONFIG = """
storage "memory" {{}}
listener "tcp" {{
  address     = "{addr}"
  tls_disable = true
}}
log_level = "debug"
"""

# (method, path, body or query) with the marker where a value of another kind or range belongs.
CASES = [
    ("PUT", "secret/data/leak", {"data": {"a": "b"}, "options": {"cas": MARKER}}),
    ("PUT", "secret/data/leak", {"data": MARKER}),
    ("PUT", "secret/metadata/leak", {"max_versions": MARKER}),
    ("PUT", "secret/metadata/leak", {"cas_required": MARKER}),
    ("PUT", "secret/metadata/leak", {"delete_version_after": MARKER}),
    ("PUT", "secret/metadata/leak", {"custom_metadata": {"k": {"nested": MARKER}}}),
    ("POST", "secret/config", {"max_versions": MARKER}),
    ("POST", "secret/delete/leak", {"versions": [MARKER]}),
    ("POST", "secret/destroy/leak", {"versions": MARKER}),
    ("GET", f"secret/data/leak?version={MARKER}", None),
    ("GET", f"secret/subkeys/leak?depth={MARKER}", None),
    ("GET", f"secret/metadata/?list={MARKER}", None),
    ("POST", "transit/keys/leaky", {"type": MARKER}),
    ("POST", "transit/keys/leaky", {"auto_rotate_period": MARKER}),
    ("POST", "transit/keys/leaky", {"derived": MARKER}),
    ("POST", "transit/keys/known/config", {"min_decryption_version": MARKER}),
    ("POST", "transit/encrypt/known", {"plaintext": MARKER + "!"}),
    ("POST", "transit/encrypt/known", {"plaintext": "aGk=", "key_version": MARKER}),
    ("POST", "transit/decrypt/known", {"ciphertext": [MARKER]}),
    ("POST", "transit/datakey/plaintext/known", {"bits": MARKER}),
    ("POST", "transit/random", {"bytes": MARKER}),
    ("POST", "transit/random", {"format": MARKER}),
    ("POST", "transit/random", {"source": MARKER}),
    ("POST", "transit/hash", {"input": "aGk=", "algorithm": MARKER}),
    ("POST", "transit/hash", {"input": "aGk=", "format": MARKER}),
    ("POST", "transit/hmac/known", {"input": "aGk=", "algorithm": MARKER}),
    ("POST", "transit/restore", {"backup": [MARKER]}),
    ("POST", "auth/token/create", {"ttl": MARKER}),
    ("POST", "auth/token/create", {"num_uses": MARKER}),
    ("POST", "auth/token/create", {"period": MARKER}),
    ("POST", "auth/token/create", {"explicit_max_ttl": MARKER}),
    ("POST", "auth/token/create", {"policies": {"k": MARKER}}),
    ("POST", "auth/token/create", {"meta": {"k": {"n": MARKER}}}),
    ("POST", "auth/token/renew-self", {"increment": MARKER}),
    ("POST", "auth/token/lookup", {"token": [MARKER]}),
    ("POST", "sys/mounts/leak", {"type": [MARKER]}),
    ("POST", "sys/mounts/leak", {"type": "kv", "config": MARKER}),
    ("POST", "sys/mounts/secret/tune", {"default_lease_ttl": MARKER}),
    ("POST", "sys/auth/leak", {"type": {"k": MARKER}}),
    ("POST", "sys/policies/acl/leak", {"policy": f'path "a" {{ capabilities = ["{MARKER}"] }}'}),
    ("POST", "sys/policies/acl/leak", {"policy": f'path "a" {{ {MARKER} = 1 }}'}),
    ("POST", "sys/policies/acl/leak", {"policy": [MARKER]}),
    ("POST", "sys/rotate/config", {"max_operations": MARKER}),
    ("POST", "sys/rotate/config", {"interval": MARKER}),
    ("POST", "sys/capabilities-self", {"paths": {"k": MARKER}}),
    ("POST", "sys/audit-hash/file", {"input": [MARKER]}),
    ("POST", "sys/remount", {"from": [MARKER], "to": "x"}),
    ("PUT", "sys/unseal", {"key": [MARKER]}),
    ("PUT", "sys/init", {"secret_shares": MARKER}),
    ("POST", "sys/rekey/init", {"secret_shares": MARKER}),
    ("GET", f"sys/health?standbycode={MARKER}", None),
    ("POST", "cubbyhole/leak", MARKER),
]


def test_markers_reach_no_answer_no_log_and_no_audit_record(cofferd_bin, workdir):
    server = start_cofferd_config(cofferd_bin, CONFIG, workdir)
    a = server.addr + "/v1/"
    try:
        init = requests.put(a + "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        assert requests.put(a + "sys/unseal", json={"key": init["keys"][0]}).json()["sealed"] is False
        root = {"X-Vault-Token": init["root_token"]}
        audit_log = os.path.join(workdir, "audit.log")
        for setup in [
            ("POST", "sys/audit/file", {"type": "file", "options": {"file_path": audit_log}}),
            ("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}),
            ("POST", "sys/mounts/transit", {"type": "transit"}),
            ("POST", "transit/keys/known", {}),
        ]:
            r = requests.request(setup[0], a + setup[1], json=setup[2], headers=root)
            assert r.status_code in (200, 204), (setup, r.text)
        for method, path, body in CASES:
            data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
            r = requests.request(method, a + path, data=data, headers=root)
            assert r.status_code in (400, 404, 405), (method, path, r.status_code, r.text)
            assert MARKER not in r.text, (method, path, r.text)
        # Still serving.
        assert requests.get(a + "sys/health").status_code == 200
    finally:
        server.stop()
    assert MARKER not in server.output(), "a marker reached cofferd's log"
    with open(audit_log) as f:
        records = f.read()
    assert records.count("\n") >= len(CASES), "every request was audited"
    assert MARKER not in records, "a marker reached the audit log"
