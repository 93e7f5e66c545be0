"""A database lease through the Python binding (issue 15), against the real PostgreSQL that
`make test-bindings` starts (Tests/compat/pgserver.py) and names in COFFER_TEST_PG_URL,
COFFER_TEST_PG_PORT and COFFER_TEST_PG_PASSWORD. A missing variable fails the test: it is not skipped."""

import os
import subprocess

import pytest

import coffer

CREATE = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
REVOKE = 'DROP ROLE IF EXISTS "{{name}}";'


@pytest.fixture
def pg():
    names = ("COFFER_TEST_PG_URL", "COFFER_TEST_PG_PORT", "COFFER_TEST_PG_PASSWORD")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run through `make test-bindings`, which starts a PostgreSQL", pytrace=False)
    return {n: os.environ[n] for n in names}


def psql(pg, sql, user="postgres", password=None):
    env = dict(os.environ, PGPASSWORD=password or pg["COFFER_TEST_PG_PASSWORD"], PGCONNECT_TIMEOUT="5",
               PGSSLMODE="disable", PSQLRC="/dev/null")
    return subprocess.run(["/usr/bin/psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", pg["COFFER_TEST_PG_PORT"],
                           "-U", user, "-d", "postgres", "-c", sql], env=env, capture_output=True, text=True, timeout=30)


def role_exists(pg, user):
    p = psql(pg, f"SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
    assert p.returncode == 0, p.stderr
    return p.stdout.strip() == "1"


def test_database_lease_renew_and_revoke(pg):
    with coffer.Coffer({"dev": True}, token="root") as c:
        assert c.request("POST", "sys/mounts/database", body={"type": "database"}).status == 204
        c.request("POST", "database/config/pg", body={
            "plugin_name": "postgresql-database-plugin", "connection_url": pg["COFFER_TEST_PG_URL"],
            "username": "postgres", "password": pg["COFFER_TEST_PG_PASSWORD"], "allowed_roles": "app"})
        assert c.request("POST", "database/roles/app", body={
            "db_name": "pg", "creation_statements": [CREATE], "revocation_statements": [REVOKE],
            "default_ttl": "1h", "max_ttl": "24h"}).status == 204

        secret = c.request("GET", "database/creds/app").body
        lease, user, password = secret["lease_id"], secret["data"]["username"], secret["data"]["password"]
        assert lease.startswith("database/creds/app/") and secret["lease_duration"] == 3600 and secret["renewable"]
        login = psql(pg, "SELECT current_user", user=user, password=password)
        assert login.returncode == 0 and login.stdout.strip() == user, login.stderr

        renewed = c.request("PUT", "sys/leases/renew", body={"lease_id": lease, "increment": "10m"}).body
        assert renewed["lease_id"] == lease and renewed["lease_duration"] == 600
        assert 590 <= c.request("PUT", "sys/leases/lookup", body={"lease_id": lease}).body["data"]["ttl"] <= 600

        revoked = c.request("PUT", "sys/leases/revoke", body={"lease_id": lease})
        assert revoked.status == 204 and revoked.body is None
        assert not role_exists(pg, user)
        assert psql(pg, "SELECT 1", user=user, password=password).returncode != 0
        with pytest.raises(coffer.InvalidArgumentError) as unknown:
            c.request("PUT", "sys/leases/lookup", body={"lease_id": lease})
        assert unknown.value.http_status == 400 and unknown.value.body == {"errors": ["invalid lease"]}
