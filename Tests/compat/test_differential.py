"""The same request sequence against `bao server -dev` (OpenBao 2.7.2) and `cofferd -dev`.

For every step the status codes must be equal and the JSON bodies must have the same shape: the
same keys at every level, and the same JSON type for every value (ids, tokens and timestamps
differ by nature, so values are not compared, except where a step says so). Differences that are
intended are listed with `ignore=` and explained in docs/compatibility.md.
"""
import json
import re
import time

import requests

from conftest import start_bao_dev, start_cofferd_dev

POLICY = """
path "secret/data/app/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/app/*" { capabilities = ["list", "read"] }
"""


def step(name, method, path, body=None, token="root", headers=None, ignore=(), values=(), capture=None):
    return dict(name=name, method=method, path=path, body=body, token=token, headers=headers or {},
                ignore=ignore, values=values, capture=capture or {})


# Paths in `ignore` are dotted (data.foo) and may end in `*` (every key of that object); "<body>" skips the
# body comparison (the status is still compared).
SEQUENCE = [
    step("seal-status", "GET", "sys/seal-status", token=None,
         values=("type", "initialized", "sealed", "t", "n", "progress"), ignore=("commit_date",)),
    step("health", "GET", "sys/health", token=None, values=("initialized", "sealed", "standby"),
         ignore=("performance_standby",)),
    step("health sealedcode ignored when unsealed", "GET", "sys/health?sealedcode=299", token=None,
         ignore=("performance_standby",)),
    step("leader", "GET", "sys/leader", token=None, ignore=("*",)),
    step("init status", "GET", "sys/init", token=None, values=("initialized",)),
    step("mounts: secret/ entry", "GET", "sys/mounts", ignore=("data.cubbyhole/", "data.identity/", "cubbyhole/",
                                                               "identity/", "data.sys/", "sys/", "secret/", "data.secret/.uuid")),
    step("mount kv v1", "POST", "sys/mounts/kv1", {"type": "kv", "description": "v1"}),
    step("mount kv v2", "POST", "sys/mounts/kv2b", {"type": "kv", "options": {"version": "2"}}),
    step("mount twice", "POST", "sys/mounts/kv1", {"type": "kv"}),
    step("tune read", "GET", "sys/mounts/kv2b/tune", values=("data.default_lease_ttl", "data.max_lease_ttl")),
    step("tune write", "POST", "sys/mounts/kv2b/tune", {"description": "tuned"}),
    # Mount and tune rules, values compared.
    step("mount read", "GET", "sys/mounts/kv1", values=("data.options", "data.config", "data.type"),
         ignore=("path", "data.path")),
    step("tune TTLs", "POST", "sys/mounts/kv1/tune", {"default_lease_ttl": "1h", "max_lease_ttl": "2h"}),
    step("tune a default above the max", "POST", "sys/mounts/kv1/tune", {"default_lease_ttl": "3h"},
         values=("errors",)),
    step("tune a max below the default", "POST", "sys/mounts/kv1/tune", {"max_lease_ttl": "30m"}, values=("errors",)),
    step("tune read after refusals", "GET", "sys/mounts/kv1/tune", values=("data.default_lease_ttl", "data.max_lease_ttl")),
    step("tune a bad listing_visibility", "POST", "sys/mounts/kv1/tune", {"listing_visibility": "bogus"},
         values=("errors",)),
    step("tune a KV v2 mount down to v1", "POST", "sys/mounts/kv2b/tune", {"options": {"version": "1"}},
         values=("errors",)),
    step("mount with a default above the max", "POST", "sys/mounts/kvbad",
         {"type": "kv", "config": {"default_lease_ttl": "5m", "max_lease_ttl": "1m"}}, values=("errors",)),
    step("unmount sys/", "DELETE", "sys/mounts/sys", values=("errors",)),
    step("unmount cubbyhole/", "DELETE", "sys/mounts/cubbyhole", values=("errors",)),
    step("auth enable", "POST", "sys/auth/updiff", {"type": "userpass"}),
    step("auth read", "GET", "sys/auth/updiff", values=("data.config", "data.options", "data.deprecation_status"),
         ignore=("path", "data.path")),
    # Moving a mount; OpenBao finishes the move in the background, so its status is read further down.
    step("remount", "POST", "sys/remount", {"from": "kv2b", "to": "kv2moved"}, capture={"migration": "data.migration_id"}),
    step("remount without to", "POST", "sys/remount", {"from": "kv2b"}),
    step("remount missing source", "POST", "sys/remount", {"from": "nomount", "to": "elsewhere"}),
    step("remount onto a mount", "POST", "sys/remount", {"from": "secret", "to": "kv1"}),
    step("remount sys", "POST", "sys/remount", {"from": "sys", "to": "elsewhere"}),
    step("remount GET", "GET", "sys/remount"),
    step("remount status unknown", "GET", "sys/remount/status/00000000-0000-0000-0000-000000000000"),
    step("ui mount preflight", "GET", "sys/internal/ui/mounts/secret/app/db", values=("data.path", "data.type", "data.options")),
    step("ui mount preflight, no mount", "GET", "sys/internal/ui/mounts/nonexistent/x"),
    step("kv2 write", "PUT", "secret/data/app/db", {"data": {"user": "me", "n": 1, "nested": {"a": True}}, "options": {}},
         values=("data.version", "data.destroyed", "data.deletion_time")),
    step("kv2 read", "GET", "secret/data/app/db", values=("data.data", "data.metadata.version")),
    step("kv2 read version", "GET", "secret/data/app/db?version=1", values=("data.data",)),
    step("kv2 read missing", "GET", "secret/data/app/missing"),
    step("kv2 read bad version", "GET", "secret/data/app/db?version=99"),
    step("kv2 cas mismatch", "PUT", "secret/data/app/db", {"data": {"x": 1}, "options": {"cas": 0}}),
    step("kv2 no data", "PUT", "secret/data/app/db", {"options": {}}),
    step("kv2 patch", "PATCH", "secret/data/app/db", {"data": {"n": 2, "user": None}},
         headers={"Content-Type": "application/merge-patch+json"}, values=("data.version",)),
    step("kv2 read after patch", "GET", "secret/data/app/db", values=("data.data",)),
    step("kv2 patch wrong content type", "PATCH", "secret/data/app/db", {"data": {"n": 3}},
         headers={"Content-Type": "application/json"}),
    step("kv2 patch missing", "PATCH", "secret/data/app/nothing", {"data": {"n": 3}},
         headers={"Content-Type": "application/merge-patch+json"}, ignore=("<body>",)),
    step("kv2 second key", "POST", "secret/data/app/sub/key", {"data": {"k": "v"}}),
    step("kv2 metadata", "GET", "secret/metadata/app/db",
         values=("data.current_version", "data.oldest_version", "data.max_versions", "data.delete_version_after")),
    step("kv2 metadata write", "POST", "secret/metadata/app/db", {"max_versions": 5, "custom_metadata": {"team": "x"}}),
    step("kv2 list (LIST verb)", "LIST", "secret/metadata/app", values=("data.keys",)),
    step("kv2 list (?list=true)", "GET", "secret/metadata/app/?list=true", values=("data.keys",)),
    step("kv2 list missing folder", "LIST", "secret/metadata/nothing"),
    step("kv2 delete latest", "DELETE", "secret/data/app/db"),
    step("kv2 read deleted (404 with body)", "GET", "secret/data/app/db", values=("data.data", "data.metadata.version")),
    step("kv2 undelete", "POST", "secret/undelete/app/db", {"versions": [2]}),
    step("kv2 destroy", "PUT", "secret/destroy/app/db", {"versions": [1]}),
    step("kv2 read destroyed", "GET", "secret/data/app/db?version=1", values=("data.metadata.destroyed",)),
    step("kv2 delete no versions", "POST", "secret/delete/app/db", {}),
    step("kv2 subkeys", "GET", "secret/subkeys/app/db", values=("data.subkeys",)),
    # Metadata and check-and-set rules, values compared.
    step("kv2 rules: write", "PUT", "secret/data/rules", {"data": {"a": "1"}}),
    step("kv2 rules: metadata write", "POST", "secret/metadata/rules", {"custom_metadata": {"o": "x", "p": "y"}}),
    step("kv2 rules: metadata patch, null removes a key", "PATCH", "secret/metadata/rules",
         {"custom_metadata": {"o": None, "q": "z"}, "cas_required": True},
         headers={"Content-Type": "application/merge-patch+json"}),
    step("kv2 rules: metadata", "GET", "secret/metadata/rules",
         values=("data.custom_metadata", "data.current_metadata_version", "data.cas_required")),
    step("kv2 rules: a patch without cas where cas is required", "PATCH", "secret/data/rules", {"data": {"b": "2"}},
         headers={"Content-Type": "application/merge-patch+json"}, values=("errors",)),
    step("kv2 rules: destroy", "PUT", "secret/destroy/rules", {"versions": [1]}),
    step("kv2 rules: a patch with a wrong cas on a destroyed version", "PATCH", "secret/data/rules",
         {"data": {"b": "2"}, "options": {"cas": 7}}, headers={"Content-Type": "application/merge-patch+json"},
         values=("errors",)),
    step("kv2 rules: subkeys of a destroyed version", "GET", "secret/subkeys/rules",
         values=("data.subkeys", "data.metadata.destroyed", "data.metadata.version")),
    step("kv2 rules: undelete without versions", "POST", "secret/undelete/rules", {}, values=("errors",)),
    step("kv2 rules: two more versions", "PUT", "secret/data/rules", {"data": {"a": "2"}, "options": {"cas": 1}}),
    step("kv2 rules: and a third", "PUT", "secret/data/rules", {"data": {"a": "3"}, "options": {"cas": 2}}),
    step("kv2 rules: max_versions lowered", "POST", "secret/metadata/rules", {"max_versions": 1}),
    step("kv2 rules: versions kept until the next write", "GET", "secret/metadata/rules",
         values=("data.oldest_version", "data.current_version", "data.max_versions"),
         ignore=("data.versions.*",)),
    step("kv2 rules: the next write", "PUT", "secret/data/rules", {"data": {"a": "4"}, "options": {"cas": 3}}),
    step("kv2 rules: trimmed by it", "GET", "secret/metadata/rules",
         values=("data.oldest_version", "data.current_version"), ignore=("data.versions.*",)),
    step("kv2 config", "GET", "secret/config", values=("data.max_versions", "data.cas_required")),
    step("kv2 config write", "POST", "secret/config", {"max_versions": 10}),
    step("bad JSON body", "POST", "secret/data/app/x", "{not json"),
    step("kv1 write", "PUT", "kv1/foo", {"a": "b", "n": 1}),
    step("kv1 read", "GET", "kv1/foo", values=("data", "lease_duration")),
    step("kv1 list", "LIST", "kv1", values=("data.keys",)),
    step("kv1 empty write", "PUT", "kv1/empty", {}),
    step("kv1 delete", "DELETE", "kv1/foo"),
    # Cubbyhole: the root token's own storage, mounted in every vault.
    step("cubbyhole write", "PUT", "cubbyhole/app/db", {"password": "s3cret", "n": 2}),
    step("cubbyhole read", "GET", "cubbyhole/app/db", values=("data", "lease_duration", "renewable")),
    step("cubbyhole list", "LIST", "cubbyhole/app", values=("data.keys",)),
    step("cubbyhole read missing", "GET", "cubbyhole/app/nothing"),
    step("cubbyhole delete", "DELETE", "cubbyhole/app/db"),
    step("cubbyhole read deleted", "GET", "cubbyhole/app/db"),
    # A field the path does not declare is ignored, with a warning naming it.
    step("undeclared field warning", "POST", "sys/policies/acl/warned",
         {"policy": 'path "x" { capabilities = ["read"] }', "colour": "blue"}, values=("warnings",)),
    step("kv1 read deleted", "GET", "kv1/foo"),
    step("policy write", "PUT", "sys/policies/acl/app", {"policy": POLICY}),
    step("policy read", "GET", "sys/policies/acl/app", values=("data.name", "data.policy"),
         ignore=("data.modified", "data.version", "data.cas_required", "data.allow_slashes_in_identity_templates",
                 "data.allow_wildcards_in_identity_templates")),
    step("policy list", "LIST", "sys/policies/acl", values=("data.keys",)),
    step("policy list (GET ?list=true)", "GET", "sys/policies/acl?list=true", values=("data.keys",)),
    step("legacy policy list", "GET", "sys/policy", values=("data.keys", "policies")),
    step("legacy policy read", "GET", "sys/policy/app", values=("name", "rules"),
         ignore=tuple(f"{prefix}{key}" for prefix in ("", "data.") for key in (
             "modified", "version", "cas_required", "allow_slashes_in_identity_templates",
             "allow_wildcards_in_identity_templates"))),
    step("policy syntax error", "PUT", "sys/policies/acl/bad", {"policy": 'path "x" { capabilities = ["read"'}),
    step("policy missing", "GET", "sys/policies/acl/nope"),
    step("token create", "POST", "auth/token/create", {"policies": ["app"], "ttl": "1h", "meta": {"who": "test"}},
         values=("auth.policies", "auth.token_policies", "auth.lease_duration", "auth.renewable", "auth.orphan"),
         capture={"limited": "auth.client_token", "accessor": "auth.accessor"}),
    step("token create orphan", "POST", "auth/token/create-orphan", {"policies": ["default"], "ttl": "10m"},
         values=("auth.orphan",), capture={"orphan": "auth.client_token"}),
    step("token lookup-self (limited)", "GET", "auth/token/lookup-self", token="{limited}",
         values=("data.policies", "data.meta", "data.path", "data.display_name", "data.num_uses", "data.orphan"),
         ignore=("data.issue_time",)),
    step("token lookup (root)", "POST", "auth/token/lookup", {"token": "{limited}"}, values=("data.policies",)),
    # Token creation's own rules (OpenBao's handleCreateCommon and policyutil), values compared.
    step("token create: policies trimmed, lower-cased, empty names dropped", "POST", "auth/token/create",
         {"policies": ["App", " app ", ""], "display_name": "My App/1"},
         values=("auth.policies", "warnings"), capture={"named": "auth.client_token"}),
    step("token create: display name sanitised", "GET", "auth/token/lookup-self", token="{named}",
         values=("data.display_name", "data.policies"), ignore=("data.issue_time",)),
    step("token create: an empty policy list inherits the parent's", "POST", "auth/token/create",
         {"policies": [], "ttl": "1h"}, values=("auth.policies",)),
    step("token create: a policy that does not exist is a warning", "POST", "auth/token/create",
         {"policies": ["nope"], "ttl": "1h"}, values=("auth.policies", "warnings")),
    step("token create: TTL capped by explicit_max_ttl, with a warning", "POST", "auth/token/create",
         {"ttl": "1h", "explicit_max_ttl": "30m"}, values=("auth.lease_duration", "warnings")),
    step("token create: a batch token with a period", "POST", "auth/token/create",
         {"type": "batch", "period": "1h", "policies": ["app"]}, values=("errors",)),
    step("token create: an unknown type", "POST", "auth/token/create", {"type": "nope"}, values=("errors",)),
    step("token create: a custom id with a dot", "POST", "auth/token/create", {"id": "b.mine"}, values=("errors",)),
    step("token create: entity_alias without a role", "POST", "auth/token/create", {"entity_alias": "x"},
         values=("errors",)),
    step("token create: a write to a path ending in /", "POST", "auth/token/create/", {}, values=("errors",)),
    step("token lookup-accessor", "POST", "auth/token/lookup-accessor", {"accessor": "{accessor}"},
         values=("data.id",)),
    step("token lookup bogus", "POST", "auth/token/lookup", {"token": "s.bogusbogusbogusbogusbogu"}),
    step("token renew-self", "POST", "auth/token/renew-self", {"increment": "30m"}, token="{limited}",
         values=("auth.lease_duration", "auth.renewable")),
    step("token renew root (not renewable)", "POST", "auth/token/renew-self", {}),
    step("capabilities-self", "POST", "sys/capabilities-self", {"paths": ["secret/data/app/db", "sys/mounts"]},
         token="{limited}", values=("data",), ignore=("secret/data/app/db", "sys/mounts")),
    step("capabilities (singular path)", "POST", "sys/capabilities", {"token": "{limited}", "path": "secret/data/app/db"},
         values=("data", "capabilities"), ignore=("secret/data/app/db",)),
    step("limited: allowed write", "PUT", "secret/data/app/limited", {"data": {"x": "y"}}, token="{limited}"),
    step("limited: allowed read", "GET", "secret/data/app/limited", token="{limited}", values=("data.data",)),
    step("limited: denied write", "PUT", "secret/data/other", {"data": {"x": "y"}}, token="{limited}"),
    step("limited: denied sys", "GET", "sys/mounts", token="{limited}"),
    step("no token", "GET", "secret/data/app/limited", token=None, values=("errors",)),
    step("bogus token", "GET", "secret/data/app/limited", token="s.nope", values=("errors",)),
    step("empty token", "GET", "secret/data/app/limited", token="", values=("errors",)),
    step("bearer token", "GET", "secret/data/app/limited", token=None, headers={"Authorization": "Bearer {limited}"},
         values=("data.data",)),
    step("unknown method", "FOO", "secret/data/app/limited"),
    step("unsupported sys path", "GET", "sys/nonexistent"),
    # Clients match these texts (issue 13 item 13).
    step("audit-hash of an unknown device", "POST", "sys/audit-hash/nope", {"input": "x"}, values=("errors",)),
    step("audit-hash without input", "POST", "sys/audit-hash/nope", {}, values=("errors",)),
    step("no such mount", "GET", "nomount/data/x"),
    step("root namespace", "GET", "secret/data/app/limited", headers={"X-Vault-Namespace": "root"}),
    step("missing namespace", "GET", "secret/data/app/limited", headers={"X-Vault-Namespace": "ns1"}, values=("errors",)),
    step("token revoke-accessor", "POST", "auth/token/revoke-accessor", {"accessor": "{accessor}"}),
    step("revoked token refused", "GET", "auth/token/lookup-self", token="{limited}", values=("errors",)),
    step("token revoke-self (orphan)", "POST", "auth/token/revoke-self", token="{orphan}"),
    step("policy delete", "DELETE", "sys/policies/acl/app"),
    step("policy delete root", "DELETE", "sys/policies/acl/root"),
    step("unmount", "DELETE", "sys/mounts/kv1"),
    step("remount status", "GET", "sys/remount/status/{migration}",
         values=("data.migration_info.source_mount", "data.migration_info.target_mount", "data.migration_info.status")),
    step("moved mount keeps its tuning", "GET", "sys/mounts/kv2moved/tune", values=("data.description", "data.options")),
    step("rekey backup (no token)", "GET", "sys/rekey/backup", token=None, values=("errors",)),
    step("rekey backup", "GET", "sys/rekey/backup", values=("errors",)),
    step("rekey backup delete", "DELETE", "sys/rekey/backup"),
    step("generic mount", "POST", "sys/mounts/gen", {"type": "generic"}),
    step("generic mount with a version", "POST", "sys/mounts/gen2", {"type": "generic", "options": {"version": "2"}},
         values=("errors",)),
    step("generic write", "PUT", "gen/foo", {"a": "b"}),
    step("generic read", "GET", "gen/foo", values=("data",)),
    step("generic mount listed", "GET", "sys/mounts", values=("data.gen/.type",), ignore=("<body>",)),
    step("transit mount", "POST", "sys/mounts/transit", {"type": "transit"}),
    step("transit RSA key", "POST", "transit/keys/rsa", {"type": "rsa-2048"}, ignore=("<body>",)),
    step("sign with salt_length -1 (hash)", "POST", "transit/sign/rsa", {"input": "aGVsbG8=", "salt_length": "-1"},
         values=("data.key_version",)),
    step("sign with salt_length 0 (auto)", "POST", "transit/sign/rsa", {"input": "aGVsbG8=", "salt_length": 0},
         values=("data.key_version",)),
    step("sign with salt_length -2", "POST", "transit/sign/rsa", {"input": "aGVsbG8=", "salt_length": "-2"}),
    step("key status", "GET", "sys/key-status", values=("data.term",)),
    step("rotate", "PUT", "sys/rotate"),
    step("key status after rotate", "GET", "sys/key-status", values=("data.term",)),
    step("seal", "PUT", "sys/seal"),
    step("sealed: seal-status", "GET", "sys/seal-status", token=None, values=("sealed", "t", "n", "progress"),
         ignore=("commit_date",)),
    step("sealed: health", "GET", "sys/health", token=None,
         values=("sealed", "initialized", "standby", "replication_dr_mode"), ignore=("performance_standby",)),
    step("sealed: kv read", "GET", "secret/data/app/limited", values=("errors",)),
    step("sealed: no token", "GET", "sys/mounts", token=None, values=("errors",)),
    step("unseal", "PUT", "sys/unseal", {"key": "{unseal_key}"}, token=None, values=("sealed", "progress"),
         ignore=("commit_date",)),
    step("unsealed: kv read", "GET", "secret/data/app/limited", values=("data.data",)),
]


def shape(value):
    if isinstance(value, dict):
        # Error messages are free text: an `errors` list of strings, empty or not, is the shape.
        return {k: "errors" if k == "errors" else shape(v) for k, v in value.items()}
    if isinstance(value, list):
        kinds = []
        for v in value:
            s = shape(v)
            if s not in kinds:
                kinds.append(s)
        return kinds
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "string"


def drop(obj, dotted):
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(obj, dict) or part not in obj:
            return
        obj = obj[part]
    if isinstance(obj, dict):
        if parts[-1] == "*":
            obj.clear()
        else:
            obj.pop(parts[-1], None)


def get(obj, dotted):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return "<absent>"
        obj = obj[part]
    return obj


def fill(text, variables):
    return re.sub(r"\{(\w+)\}", lambda m: variables[m.group(1)], text) if isinstance(text, str) else text


def run(server, unseal_key):
    variables = {"root": "root", "unseal_key": unseal_key}
    results = []
    for s in SEQUENCE:
        headers = {k: fill(v, variables) for k, v in s["headers"].items()}
        if s["token"] is not None:
            headers["X-Vault-Token"] = fill(s["token"], variables)
        body = s["body"]
        if isinstance(body, dict):
            body = fill(json.dumps(body), variables)
        r = requests.request(s["method"], f"{server.addr}/v1/{s['path']}", data=body, headers=headers, timeout=10)
        try:
            parsed = r.json() if r.content else None
        except ValueError:
            parsed = f"<not JSON: {r.text[:80]!r}>"
        for name, dotted in s["capture"].items():
            variables[name] = get(parsed, dotted)
        results.append((r.status_code, parsed, r.headers.get("Content-Type")))
    return results


def unseal_key_of(server):
    """The key the dev server printed (OpenBao prints its banner a moment after it starts listening)."""
    deadline = time.monotonic() + 20
    while not (match := re.search(r"Unseal Key: (\S+)", server.output())):
        assert time.monotonic() < deadline, "the dev server did not print its unseal key"
        time.sleep(0.05)
    return match.group(1)


def test_same_shapes_as_openbao(cofferd_bin, bao_bin):
    bao = start_bao_dev(bao_bin)
    coffer = start_cofferd_dev(cofferd_bin)
    try:
        expected = run(bao, unseal_key_of(bao))
        actual = run(coffer, unseal_key_of(coffer))
    finally:
        bao.stop()
        coffer.stop()

    problems = []
    for s, (bao_status, bao_body, bao_type), (status, body, ctype) in zip(SEQUENCE, expected, actual):
        label = f"{s['name']} ({s['method']} {s['path']})"
        if bao_status != status:
            problems.append(f"{label}: status {status}, OpenBao {bao_status}; body {body}, OpenBao {bao_body}")
            continue
        if ctype != bao_type:
            problems.append(f"{label}: Content-Type {ctype!r}, OpenBao {bao_type!r}")
        for dotted in s["values"]:
            if get(body, dotted) != get(bao_body, dotted):
                problems.append(f"{label}: {dotted} = {get(body, dotted)!r}, OpenBao {get(bao_body, dotted)!r}")
        if "<body>" in s["ignore"]:
            continue
        if isinstance(body, dict) and isinstance(bao_body, dict):
            for dotted in s["ignore"]:
                drop(body, dotted)
                drop(bao_body, dotted)
        if shape(body) != shape(bao_body):
            problems.append(f"{label}: shape\n    coffer  {shape(body)}\n    openbao {shape(bao_body)}")
    assert not problems, "differences from OpenBao 2.7.2:\n" + "\n".join(problems)
