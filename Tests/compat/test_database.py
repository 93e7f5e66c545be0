"""Leases and the database secrets engine (issue 15) through the real clients, against a real PostgreSQL.

The unmodified `bao` CLI and hvac drive cofferd; every claim is checked in the database itself with the
real `psql` (the user exists, can log in, is gone). Expiry runs on cofferd's real clock (no test hooks).
The last test sends the same requests to `bao server -dev` (OpenBao 2.7.2) with the same PostgreSQL and
compares the shapes, statuses and error texts (/work/shared/design/LEASES-DATABASE-PKI.md, sections 1 and 2).
"""
import json
import re
import time

import hvac
import pytest
import requests
from hvac import exceptions

from conftest import run_bao, start_bao_dev, start_cofferd_dev
from test_differential import shape

CREATE = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
REVOKE = 'DROP ROLE IF EXISTS "{{name}}";'
LEASE_SUFFIX = r"[A-Za-z0-9]{24}"


@pytest.fixture(scope="module")
def coffer(cofferd_bin):
    """A cofferd of this module's own (the tests unmount and revoke freely)."""
    server = start_cofferd_dev(cofferd_bin)
    yield server
    server.stop()


class Api:
    def __init__(self, server, token="root"):
        self.addr, self.token = server.addr, token

    def __call__(self, method, path, body=None, token=None):
        r = requests.request(method, f"{self.addr}/v1/{path}", json=body, timeout=30,
                             headers={"X-Vault-Token": token or self.token})
        try:
            parsed = r.json() if r.content else None
        except ValueError:
            parsed = r.text
        return r.status_code, parsed


def cli(server, bao_bin, *args, token="root", check=True, format=None):
    return run_bao(bao_bin, server.addr, *args, token=token, check=check, format=format)


def cli_json(server, bao_bin, *args, token="root"):
    _, out, _ = cli(server, bao_bin, *args, token=token, format="json")
    return json.loads(out)


def ensure_database(api, postgres, mount="database", roles=None, allowed="*"):
    """Mounts the engine at `mount` (if needed), points config `pg` at the test PostgreSQL, writes `roles`."""
    status, body = api("POST", f"sys/mounts/{mount}", {"type": "database"})
    assert status == 204 or (status == 400 and "already in use" in json.dumps(body)), (status, body)
    status, body = api("POST", f"{mount}/config/pg", {
        "plugin_name": "postgresql-database-plugin", "connection_url": postgres.url_template,
        "username": "postgres", "password": postgres.password, "allowed_roles": allowed})
    assert status in (200, 204), (status, body)
    for name, fields in (roles or {}).items():
        status, body = api("POST", f"{mount}/roles/{name}", {
            "db_name": "pg", "creation_statements": [CREATE], "revocation_statements": [REVOKE], **fields})
        assert status == 204, (status, body)


def creds(api, path, token=None):
    status, body = api("GET", path, token=token)
    assert status == 200, (status, body)
    return body["lease_id"], body["data"]["username"], body["data"]["password"]


def assert_gone_soon(postgres, user, seconds=5.0, what=""):
    took = postgres.wait_role_gone(user, seconds)
    assert took is not None, f"{what}: the database user {user} still exists after {seconds} s"
    return took


# ---------------------------------------------------------------------------------------------------
# 1. The issue's done-when, verbatim, through the real CLI, on the real clock.

def test_done_when_cli_creds_expire_on_the_real_clock(coffer, bao_bin, postgres):
    cli(coffer, bao_bin, "secrets", "enable", "database")
    cli(coffer, bao_bin, "write", "database/config/pg", "plugin_name=postgresql-database-plugin",
        f"connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{postgres.port}/postgres?sslmode=disable",
        "username=postgres", f"password={postgres.password}", "allowed_roles=app")
    cli(coffer, bao_bin, "write", "database/roles/app", "db_name=pg", f"creation_statements={CREATE}",
        "default_ttl=2s", "max_ttl=1h")
    issued = time.monotonic()
    _, out, _ = cli(coffer, bao_bin, "read", "-format=json", "database/creds/app")
    secret = json.loads(out)
    user, password = secret["data"]["username"], secret["data"]["password"]
    assert re.fullmatch(rf"database/creds/app/{LEASE_SUFFIX}", secret["lease_id"]), secret
    assert secret["lease_duration"] == 2 and secret["renewable"] is True
    assert re.fullmatch(r"v-[a-z]+-app-[A-Za-z0-9]{20}-\d{10}", user), user  # the prefix is compared with OpenBao below
    assert postgres.can_login(user, password), f"psql could not log in as {user}"
    # The role has no revocation_statements: the default revocation drops the user.
    took = assert_gone_soon(postgres, user, seconds=6.0 - (time.monotonic() - issued), what="expiry of a 2 s lease")
    gone_after = time.monotonic() - issued
    assert gone_after >= 1.5, f"the user was dropped {gone_after:.2f} s after issue, before its 2 s lease ended"
    assert took >= 0
    code, _, err = cli(coffer, bao_bin, "lease", "lookup", secret["lease_id"], check=False)
    assert code != 0 and "invalid lease" in err


# ---------------------------------------------------------------------------------------------------
# 2. bao lease lookup / renew / revoke (async, -sync, -prefix, -force -prefix), bao list sys/leases/lookup.

def test_cli_lease_commands(coffer, bao_bin, postgres):
    api = Api(coffer)
    ensure_database(api, postgres, roles={"app": {"default_ttl": "1h", "max_ttl": "24h"}})
    lease, user, password = creds(api, "database/creds/app")
    assert postgres.can_login(user, password)

    looked = cli_json(coffer, bao_bin, "lease", "lookup", lease)["data"]
    assert looked["id"] == lease and looked["path"] == "database/creds/app" and looked["renewable"] is True
    assert 3590 <= looked["ttl"] <= 3600 and looked["last_renewal"] is None
    assert "revoke_error" not in looked

    renewed = cli_json(coffer, bao_bin, "lease", "renew", "-increment=10m", lease)
    assert renewed["lease_id"] == lease and renewed["lease_duration"] == 600 and renewed["renewable"] is True
    # The default renew statement moved the user's VALID UNTIL to the new expiry.
    until = int(postgres.psql(f"SELECT extract(epoch FROM rolvaliduntil - now())::int FROM pg_roles WHERE rolname = '{user}'"))
    assert 570 <= until <= 610, f"rolvaliduntil is {until} s away after a 10m renew"
    assert cli_json(coffer, bao_bin, "lease", "lookup", lease)["data"]["last_renewal"] is not None
    renewed = cli_json(coffer, bao_bin, "lease", "renew", lease)  # increment 0: the role's default, from now
    assert 3590 <= renewed["lease_duration"] <= 3600, renewed

    # `bao lease revoke ID` sends sync:false: 202, queued; the user goes shortly after.
    _, out, _ = cli(coffer, bao_bin, "lease", "revoke", lease)
    assert "All revocation operations queued successfully!" in out, out
    assert_gone_soon(postgres, user, what="bao lease revoke (queued)")

    lease, user, _ = creds(api, "database/creds/app")
    _, out, _ = cli(coffer, bao_bin, "lease", "revoke", "-sync", lease)
    assert f"Success! Revoked lease: {lease}" in out, out
    assert not postgres.role_exists(user), "bao lease revoke -sync returned before the user was dropped"

    issued = [creds(api, "database/creds/app") for _ in range(3)]
    keys = cli_json(coffer, bao_bin, "list", "sys/leases/lookup/database/creds/app/")
    assert sorted(keys) == sorted(lease.rsplit("/", 1)[1] for lease, _, _ in issued), keys
    assert cli_json(coffer, bao_bin, "list", "sys/leases/lookup/database/") == ["creds/"]
    _, out, _ = cli(coffer, bao_bin, "lease", "revoke", "-prefix", "database/creds/app")
    assert "All revocation operations queued successfully!" in out, out
    for _, user, _ in issued:
        assert_gone_soon(postgres, user, what="bao lease revoke -prefix")
    code, _, err = cli(coffer, bao_bin, "list", "sys/leases/lookup/database/creds/app/", check=False)
    assert code == 2 and "No value found" in err, (code, err)

    # -force -prefix: the leases go; Coffer still asks the backend (the user is dropped when it can be).
    lease, user, _ = creds(api, "database/creds/app")
    _, out, _ = cli(coffer, bao_bin, "lease", "revoke", "-force", "-prefix", "database/creds/app/")
    assert "Success! Force revoked any leases with prefix: database/creds/app" in out, out
    assert api("PUT", "sys/leases/lookup", {"lease_id": lease}) == (400, {"errors": ["invalid lease"]})
    assert not postgres.role_exists(user), "revoke-force with a working backend left the user behind"

    # ...and when the backend fails, the lease is deleted anyway and the 200 names what was left behind.
    ensure_database(api, postgres, roles={"broken": {"revocation_statements": ["THIS IS NOT SQL"]}})
    lease, user, _ = creds(api, "database/creds/broken")
    status, body = api("PUT", "sys/leases/revoke", {"lease_id": lease})
    assert status == 400 and body["errors"][0].startswith("failed to revoke entry: "), (status, body)
    assert postgres.role_exists(user)
    code, out, _ = cli(coffer, bao_bin, "lease", "revoke", "-force", "-prefix", "database/creds/broken")
    assert code == 0, out
    lease2, user2, _ = creds(api, "database/creds/broken")
    status, body = api("PUT", "sys/leases/revoke-force/database/creds/broken")
    assert status == 200 and [e["lease_id"] for e in body["data"]["left_behind"]] == [lease2], (status, body)
    assert body["warnings"], body
    assert api("PUT", "sys/leases/lookup", {"lease_id": lease})[0] == 400
    assert postgres.role_exists(user) and postgres.role_exists(user2)
    postgres.psql(f'DROP ROLE "{user}"; DROP ROLE "{user2}"')


# ---------------------------------------------------------------------------------------------------
# 3. hvac: the database helpers and sys.*lease*.

def test_hvac_database_and_leases(coffer, postgres):
    client = hvac.Client(url=coffer.addr, token="root")
    client.sys.enable_secrets_engine("database", path="hvdb")
    postgres.psql("DROP ROLE IF EXISTS hv_admin; DROP ROLE IF EXISTS hv_static; "
                  "CREATE ROLE hv_admin WITH LOGIN SUPERUSER PASSWORD 'adminpw'; "
                  "CREATE ROLE hv_static WITH LOGIN PASSWORD 'initial'")
    db = client.secrets.database
    db.configure(name="pg", plugin_name="postgresql-database-plugin", allowed_roles=["app", "st"],
                 connection_url=postgres.url_template, username="hv_admin", password="adminpw", mount_point="hvdb")
    config = db.read_connection("pg", mount_point="hvdb")["data"]
    assert config["allowed_roles"] == ["app", "st"] and config["plugin_name"] == "postgresql-database-plugin"
    assert config["connection_details"] == {"connection_url": postgres.url_template, "username": "hv_admin"}
    assert "password" not in config and "adminpw" not in json.dumps(config)
    assert db.list_connections(mount_point="hvdb")["data"]["keys"] == ["pg"]

    db.create_role("app", db_name="pg", creation_statements=[CREATE], revocation_statements=[REVOKE],
                   default_ttl="1h", max_ttl="2h", mount_point="hvdb")
    role = db.read_role("app", mount_point="hvdb")["data"]
    assert role["db_name"] == "pg" and role["default_ttl"] == 3600 and role["max_ttl"] == 7200
    assert role["creation_statements"] == [CREATE] and role["revocation_statements"] == [REVOKE]
    assert db.list_roles(mount_point="hvdb")["data"]["keys"] == ["app"]

    secret = db.generate_credentials("app", mount_point="hvdb")
    lease, user, password = secret["lease_id"], secret["data"]["username"], secret["data"]["password"]
    assert postgres.can_login(user, password)
    assert secret["lease_duration"] == 3600 and secret["renewable"] is True
    other = client.read("hvdb/creds/app")
    lease_b, user_b = other["lease_id"], other["data"]["username"]
    assert postgres.role_exists(user_b)

    read = client.sys.read_lease(lease)["data"]
    assert read["id"] == lease and read["path"] == "hvdb/creds/app"
    renewed = client.sys.renew_lease(lease)  # increment: null → the role's default
    assert renewed["lease_id"] == lease and 3590 <= renewed["lease_duration"] <= 3600
    renewed = client.sys.renew_lease(lease, increment=120)
    assert renewed["lease_duration"] == 120
    keys = client.sys.list_leases("hvdb/creds/app")["data"]["keys"]
    assert sorted(keys) == sorted([lease.rsplit("/", 1)[1], lease_b.rsplit("/", 1)[1]])
    assert client.sys.revoke_lease(lease).status_code == 204
    assert not postgres.role_exists(user), "revoke_lease (sync) returned before the user was dropped"
    with pytest.raises(exceptions.InvalidRequest, match="invalid lease"):
        client.sys.read_lease(lease)
    with pytest.raises(exceptions.InvalidRequest, match="lease not found"):
        client.sys.renew_lease(lease)
    more = [client.read("hvdb/creds/app")["data"]["username"] for _ in range(2)]
    assert client.sys.revoke_prefix("hvdb/creds/app").status_code == 204
    for name in [user_b, *more]:
        assert not postgres.role_exists(name), f"revoke_prefix (sync) left {name}"

    # Static roles: the password is rotated at creation, then by rotate-role.
    db.create_static_role("st", db_name="pg", username="hv_static",
                          rotation_statements=["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}';"],
                          rotation_period=3600, mount_point="hvdb")
    assert not postgres.can_login("hv_static", "initial"), "the static role's password was not rotated at creation"
    static = db.get_static_credentials("st", mount_point="hvdb")
    assert static["lease_id"] == "" and static["data"]["username"] == "hv_static"
    assert 3590 <= static["data"]["ttl"] <= 3600 and static["data"]["rotation_period"] == 3600
    first = static["data"]["password"]
    assert postgres.can_login("hv_static", first)
    assert db.read_static_role("st", mount_point="hvdb")["data"]["username"] == "hv_static"
    assert db.list_static_roles(mount_point="hvdb")["data"]["keys"] == ["st"]
    db.rotate_static_role_credentials("st", mount_point="hvdb")
    second = db.get_static_credentials("st", mount_point="hvdb")["data"]["password"]
    assert second != first and postgres.can_login("hv_static", second) and not postgres.can_login("hv_static", first)
    db.delete_static_role("st", mount_point="hvdb")
    assert postgres.role_exists("hv_static"), "deleting a static role must not drop its user"

    # rotate-root: the admin's password changes in PostgreSQL and dynamic creds keep working.
    db.rotate_root_credentials("pg", mount_point="hvdb")
    assert not postgres.can_login("hv_admin", "adminpw")
    db.reset_connection("pg", mount_point="hvdb")
    secret = db.generate_credentials("app", mount_point="hvdb")
    assert postgres.can_login(secret["data"]["username"], secret["data"]["password"])
    db.delete_role("app", mount_point="hvdb")
    # The lease outlives its role: revocation still works (the lease keeps the statements).
    client.sys.revoke_lease(secret["lease_id"])
    assert not postgres.role_exists(secret["data"]["username"])
    client.sys.disable_secrets_engine("hvdb")
    postgres.psql("DROP ROLE hv_static; DROP ROLE hv_admin")


# ---------------------------------------------------------------------------------------------------
# 4. Leases follow their token and their mount; a revocation against a stopped database is retried.

def test_token_revoke_revokes_its_leases(coffer, bao_bin, postgres):
    api = Api(coffer)
    ensure_database(api, postgres, roles={"app": {"default_ttl": "1h", "max_ttl": "24h"}})
    policy = 'path "database/creds/*" { capabilities = ["read"] }\npath "auth/token/create" { capabilities = ["update"] }'
    assert api("PUT", "sys/policies/acl/dbcreds", {"policy": policy})[0] == 204
    parent = cli_json(coffer, bao_bin, "token", "create", "-policy=dbcreds")["auth"]["client_token"]
    child = cli_json(coffer, bao_bin, "token", "create", "-policy=dbcreds", token=parent)["auth"]["client_token"]
    _, user, password = creds(api, "database/creds/app", token=parent)
    _, child_user, _ = creds(api, "database/creds/app", token=child)
    assert postgres.can_login(user, password)
    cli(coffer, bao_bin, "token", "revoke", parent)
    assert not postgres.role_exists(user), "bao token revoke returned before the token's lease was revoked"
    assert not postgres.role_exists(child_user), "revoking the parent token left its child's lease"


def test_secrets_disable_drops_every_user(coffer, bao_bin, postgres):
    api = Api(coffer)
    ensure_database(api, postgres, mount="dbgone", roles={"a": {"default_ttl": "1h"}, "b": {"default_ttl": "1h"}})
    users = [creds(api, f"dbgone/creds/{r}")[1] for r in ("a", "a", "b")]
    assert all(postgres.role_exists(u) for u in users)
    _, out, _ = cli(coffer, bao_bin, "secrets", "disable", "dbgone")
    assert "Success! Disabled the secrets engine" in out
    left = [u for u in users if postgres.role_exists(u)]
    assert not left, f"bao secrets disable left these users: {left}"


def test_revocation_while_postgres_is_down_is_retried(coffer, bao_bin, postgres):
    api = Api(coffer)
    ensure_database(api, postgres, roles={"app": {"default_ttl": "1h", "max_ttl": "24h"}})
    lease, user, _ = creds(api, "database/creds/app")
    postgres.stop()
    try:
        # A sync revoke fails and keeps the lease...
        code, _, err = cli(coffer, bao_bin, "lease", "revoke", "-sync", lease, check=False)
        assert code != 0 and "failed to revoke entry" in err, err
        assert api("PUT", "sys/leases/lookup", {"lease_id": lease})[0] == 200
        # ...a queued one is retried; lookup shows the error and the attempts.
        assert api("PUT", f"sys/leases/revoke/{lease}", {"sync": False}) == (202, None)
        deadline = time.monotonic() + 5
        while True:
            status, body = api("PUT", "sys/leases/lookup", {"lease_id": lease})
            assert status == 200, (status, body)
            data = body["data"]
            if data.get("revoke_attempts", 0) >= 1:
                break
            assert time.monotonic() < deadline, f"no failed revocation attempt shows in lookup: {data}"
            time.sleep(0.1)
        assert data["revoke_error"], data
        assert isinstance(data["next_revoke_attempt"], str) and data["next_revoke_attempt"], data
        status, body = api("GET", "sys/leases?type=irrevocable")
        assert status == 200 and lease in [e["lease_id"] for e in body["data"]["leases"]], body
    finally:
        postgres.start()
    # (The next attempt may already have run while PostgreSQL was starting: no check that the user is still there.)
    took = assert_gone_soon(postgres, user, seconds=10.0, what="retry after PostgreSQL came back")
    assert took < 10
    assert api("PUT", "sys/leases/lookup", {"lease_id": lease}) == (400, {"errors": ["invalid lease"]})


# ---------------------------------------------------------------------------------------------------
# 5. The same requests against OpenBao 2.7.2 (`bao server -dev`) and the same PostgreSQL.

def unwrap_multierror(message):
    m = re.fullmatch(r"1 error occurred:\n\t\* (.*)\n\n", message, re.S)
    return m.group(1) if m else message


def test_differential_against_openbao(coffer, bao_bin, postgres):
    bao = start_bao_dev(bao_bin)
    try:
        _differential(Api(bao), Api(coffer), postgres)
    finally:
        bao.stop()


def _differential(ref, ours, postgres):
    problems = []
    users = []

    def both(name, method, path, body=None, same_body=False, data_keys=True, unwrapped=False, extra=()):
        """`unwrapped`: the documented difference, OpenBao's error is a Go multierror and Coffer's the message
        alone (docs/compatibility.md); `extra`: data keys only Coffer has (its documented additions)."""
        (rs, rb), (os_, ob) = ref(method, path, body), ours(method, path, body)
        label = f"{name} ({method} {path})"
        for key in extra:
            if isinstance(ob, dict) and isinstance(ob.get("data"), dict) and key in ob["data"]:
                ob = dict(ob, data={k: v for k, v in ob["data"].items() if k != key})
            else:
                problems.append(f"{label}: Coffer's addition data.{key} is missing: {ob!r}")
        if rs != os_:
            problems.append(f"{label}: status {os_}, OpenBao {rs}; body {ob!r}, OpenBao {rb!r}")
        elif unwrapped:
            wrapped = [e for e in rb.get("errors", []) if e.startswith("1 error occurred:\n\t* ")]
            if not wrapped or ob != {"errors": [unwrap_multierror(e) for e in rb["errors"]]}:
                problems.append(f"{label}: body {ob!r}, OpenBao {rb!r} (expected OpenBao's message unwrapped)")
        elif same_body and rb != ob:
            problems.append(f"{label}: body {ob!r}, OpenBao {rb!r}")
        elif isinstance(rb, dict) and isinstance(ob, dict):
            if sorted(rb) != sorted(ob):
                problems.append(f"{label}: envelope keys {sorted(ob)}, OpenBao {sorted(rb)}")
            elif data_keys and shape(rb.get("data")) != shape(ob.get("data")):
                problems.append(f"{label}: data shape\n    coffer  {shape(ob.get('data'))}\n    openbao {shape(rb.get('data'))}")
        return (rs, rb), (os_, ob)

    for api in (ref, ours):
        assert api("POST", "sys/mounts/dbdiff", {"type": "database"})[0] == 204
    config = {"plugin_name": "postgresql-database-plugin", "connection_url": postgres.url_template,
              "username": "postgres", "password": postgres.password, "allowed_roles": "app,zz"}
    both("config write", "POST", "dbdiff/config/pg", config)
    (_, rb), (_, ob) = both("config read", "GET", "dbdiff/config/pg")
    for body in (rb, ob):
        assert "password" not in body["data"] and "password" not in body["data"]["connection_details"], body
    assert sorted(ob["data"]["connection_details"]) == sorted(rb["data"]["connection_details"]) == ["connection_url", "username"]
    assert ob["data"]["allowed_roles"] == rb["data"]["allowed_roles"] == ["app", "zz"]
    role = {"db_name": "pg", "creation_statements": [CREATE], "revocation_statements": [REVOKE],
            "default_ttl": "1h", "max_ttl": "24h"}
    both("role write", "POST", "dbdiff/roles/app", role)
    # terminate_sessions is Coffer's addition (docs/compatibility.md), false unless set.
    assert ours("GET", "dbdiff/roles/app")[1]["data"]["terminate_sessions"] is False
    (_, rb), (_, ob) = both("role read", "GET", "dbdiff/roles/app", extra=("terminate_sessions",))
    for key in ("default_ttl", "max_ttl", "creation_statements", "revocation_statements", "renew_statements",
                "rollback_statements", "credential_type", "db_name"):
        if ob["data"].get(key) != rb["data"].get(key):
            problems.append(f"role read: data.{key} = {ob['data'].get(key)!r}, OpenBao {rb['data'].get(key)!r}")
    both("role list", "LIST", "dbdiff/roles", same_body=False)

    def issue(name, token=None, display=None):
        if token:
            (rs, rb), (os_, ob) = ref("GET", "dbdiff/creds/app", token=token[0]), ours("GET", "dbdiff/creds/app", token=token[1])
            if sorted(rb) != sorted(ob):
                problems.append(f"{name}: envelope keys {sorted(ob)}, OpenBao {sorted(rb)}")
        else:
            (rs, rb), (os_, ob) = both(name, "GET", "dbdiff/creds/app")
        assert rs == os_ == 200, (rb, ob)
        for body in (rb, ob):
            assert re.fullmatch(rf"dbdiff/creds/app/{LEASE_SUFFIX}", body["lease_id"]), body["lease_id"]
            assert sorted(body["data"]) == ["password", "username"]
            users.append(body["data"]["username"])
        # The default username template: v-<display name, 8>-<role, 8>-<20 random>-<unix time>. Documented
        # difference: the root token's display name is `root` in Coffer, `token` in OpenBao.
        for body, prefix in ((rb, f"v-{display or 'token'}-app-"), (ob, f"v-{display or 'root'}-app-")):
            if not re.fullmatch(rf"{prefix}[A-Za-z0-9]{{20}}-\d{{10}}", body["data"]["username"]):
                problems.append(f"{name}: username {body['data']['username']!r} does not match {prefix}...")
        for key in ("renewable", "lease_duration"):
            if ob[key] != rb[key]:
                problems.append(f"{name}: {key} = {ob[key]!r}, OpenBao {rb[key]!r}")
        return rb["lease_id"], ob["lease_id"]

    ref_lease, our_lease = issue("creds read")
    assert all(postgres.role_exists(u) for u in users[-2:])

    (rs, rb), (os_, ob) = ref("PUT", "sys/leases/lookup", {"lease_id": ref_lease}), ours("PUT", "sys/leases/lookup", {"lease_id": our_lease})
    if (rs, sorted(rb)) != (os_, sorted(ob)) or shape(rb["data"]) != shape(ob["data"]):
        problems.append(f"lease lookup: {os_} {ob!r}, OpenBao {rs} {rb!r}")
    # Coffer adds revoke_error/revoke_attempts/next_revoke_attempt only to a lease whose revocation failed.
    assert not {"revoke_error", "revoke_attempts", "next_revoke_attempt"} & set(ob["data"]), ob

    (rs, rb), (os_, ob) = (ref("PUT", "sys/leases/renew", {"lease_id": ref_lease, "increment": 600}),
                           ours("PUT", "sys/leases/renew", {"lease_id": our_lease, "increment": 600}))
    if (rs, sorted(rb), rb["data"], rb["lease_duration"], rb["renewable"]) != (os_, sorted(ob), ob["data"], ob["lease_duration"], ob["renewable"]):
        problems.append(f"renew: {os_} {ob!r}, OpenBao {rs} {rb!r}")
    (rs, rb), (os_, ob) = (ref("PUT", "sys/leases/renew", {"lease_id": ref_lease, "increment": None}),
                           ours("PUT", "sys/leases/renew", {"lease_id": our_lease, "increment": None}))
    if (rs, rb["lease_duration"]) != (os_, ob["lease_duration"]):
        problems.append(f"renew with increment null: {os_} {ob!r}, OpenBao {rs} {rb!r}")
    # Past the role's max_ttl (24h, counted from issue): capped, with a warning.
    (rs, rb), (os_, ob) = (ref("PUT", "sys/leases/renew", {"lease_id": ref_lease, "increment": "100h"}),
                           ours("PUT", "sys/leases/renew", {"lease_id": our_lease, "increment": "100h"}))
    # (The remaining max_ttl is 24h less the second or so since issue: OpenBao rounds it, "24h"; Coffer
    # truncates, "23h59m59s".)
    capped = r'TTL of "100h" exceeded the effective max_ttl of "(24h|23h59m5\ds)"; TTL value is capped accordingly'
    if rs != os_ or abs(rb["lease_duration"] - ob["lease_duration"]) > 3 or not 86390 <= ob["lease_duration"] <= 86400:
        problems.append(f"renew past max_ttl: {os_} {ob!r}, OpenBao {rs} {rb!r}")
    for label, body in (("coffer", ob), ("OpenBao", rb)):
        if not (body.get("warnings") and len(body["warnings"]) == 1 and re.fullmatch(capped, body["warnings"][0])):
            problems.append(f"renew past max_ttl: {label} warnings {body.get('warnings')!r}")

    results = ref("PUT", "sys/leases/revoke", {"lease_id": ref_lease}), ours("PUT", "sys/leases/revoke", {"lease_id": our_lease})
    if results[0] != results[1] or results[1] != (204, None):
        problems.append(f"revoke (sync default): {results[1]}, OpenBao {results[0]}")
    assert not postgres.role_exists(users[-1]) and not postgres.role_exists(users[-2])

    ref_lease, our_lease = issue("creds read 2")
    results = (ref("PUT", "sys/leases/revoke", {"lease_id": ref_lease, "sync": False}),
               ours("PUT", "sys/leases/revoke", {"lease_id": our_lease, "sync": False}))
    if results[0] != results[1] or results[1] != (202, None):
        problems.append(f"revoke sync:false: {results[1]}, OpenBao {results[0]}")
    for u in users[-2:]:
        assert_gone_soon(postgres, u, what="revoke sync:false")

    # A token with display_name app-svc (→ token-app-svc, cut to 8: token-ap) in both; revoking it revokes its lease.
    tokens = []
    for api in (ref, ours):
        assert api("PUT", "sys/policies/acl/dbread", {"policy": 'path "dbdiff/creds/*" { capabilities = ["read"] }'})[0] == 204
        status, body = api("POST", "auth/token/create", {"policies": ["dbread"], "display_name": "app-svc"})
        assert status == 200, body
        tokens.append(body["auth"]["client_token"])
    issue("creds read by a token named app-svc", token=tokens, display="token-ap")
    # ACL: the default policy grants lookup and renew of any lease; LIST lookup and revoke-prefix need sudo.
    ref_app, our_app = issue("creds read by app-svc, again", token=tokens, display="token-ap")
    for what, method, path, body in (
            ("lookup with the default policy", "PUT", "sys/leases/lookup", "lease"),
            ("renew with the default policy", "PUT", "sys/leases/renew", "lease"),
            ("LIST lookup without sudo", "LIST", "sys/leases/lookup/dbdiff/creds/app", None),
            ("revoke-prefix without sudo", "PUT", "sys/leases/revoke-prefix/dbdiff/creds/app", None)):
        rs, rb = ref(method, path, {"lease_id": ref_app} if body else None, token=tokens[0])
        os_, ob = ours(method, path, {"lease_id": our_app} if body else None, token=tokens[1])
        if rs != os_:
            problems.append(f"{what}: status {os_} {ob!r}, OpenBao {rs} {rb!r}")
        elif rs == 403 and ob != {"errors": [unwrap_multierror(e) for e in rb["errors"]]}:
            problems.append(f"{what}: {ob!r}, OpenBao {rb!r}")
    for api, token in zip((ref, ours), tokens):
        assert api("POST", "auth/token/revoke", {"token": token}) == (204, None)
    for u in users[-4:]:
        assert_gone_soon(postgres, u, what="token revoke")

    both("unknown role", "GET", "dbdiff/creds/missing", same_body=True)
    both("role not in allowed_roles: write", "POST", "dbdiff/roles/nope", role)
    # Documented difference (docs/compatibility.md): OpenBao wraps this 500 as a Go multierror, Coffer does not.
    (rs, rb), (os_, ob) = both("role not in allowed_roles", "GET", "dbdiff/creds/nope", unwrapped=True)
    assert rs == os_ == 500, (rb, ob)
    assert ob["errors"] == ['"nope" is not an allowed role'], ob
    both("creds POST", "POST", "dbdiff/creds/app", {}, unwrapped=True)
    both("lookup of an unknown lease", "PUT", "sys/leases/lookup", {"lease_id": "dbdiff/creds/app/nope"}, same_body=True)
    both("renew of an unknown lease", "PUT", "sys/leases/renew", {"lease_id": "dbdiff/creds/app/nope"}, same_body=True)
    both("revoke of an unknown lease", "PUT", "sys/leases/revoke", {"lease_id": "dbdiff/creds/app/nope"}, same_body=True)
    both("lookup without an id", "PUT", "sys/leases/lookup", {}, same_body=True)
    both("lookup GET", "GET", "sys/leases/lookup", unwrapped=True)
    for api in (ref, ours):
        api("DELETE", "sys/mounts/dbdiff")
    assert not problems, "differences from OpenBao 2.7.2:\n" + "\n".join(problems)
