package coffer_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/coffer/coffer/bindings/go/coffer"
)

// A database lease through the Go binding (issue 15), against the real PostgreSQL that
// `make test-bindings` starts and names in COFFER_TEST_PG_URL, COFFER_TEST_PG_PORT and
// COFFER_TEST_PG_PASSWORD. A missing variable fails the test: it is not skipped.

type pgEnv struct{ url, port, password string }

func testPostgres(t *testing.T) pgEnv {
	t.Helper()
	env := pgEnv{os.Getenv("COFFER_TEST_PG_URL"), os.Getenv("COFFER_TEST_PG_PORT"), os.Getenv("COFFER_TEST_PG_PASSWORD")}
	if env.url == "" || env.port == "" || env.password == "" {
		t.Fatal("COFFER_TEST_PG_URL, COFFER_TEST_PG_PORT and COFFER_TEST_PG_PASSWORD must be set (make test-bindings starts a PostgreSQL)")
	}
	return env
}

func (pg pgEnv) psql(sql, user, password string) (string, error) {
	cmd := exec.Command("/usr/bin/psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", pg.port, "-U", user,
		"-d", "postgres", "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=5", "PGSSLMODE=disable", "PSQLRC=/dev/null")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (pg pgEnv) roleExists(t *testing.T, user string) bool {
	t.Helper()
	out, err := pg.psql(fmt.Sprintf("SELECT count(*) FROM pg_roles WHERE rolname = '%s'", user), "postgres", pg.password)
	if err != nil {
		t.Fatalf("psql as postgres: %v: %s", err, out)
	}
	return out == "1"
}

type leaseResponse struct {
	LeaseID       string `json:"lease_id"`
	LeaseDuration int    `json:"lease_duration"`
	Renewable     bool   `json:"renewable"`
	Data          struct {
		Username string `json:"username"`
		Password string `json:"password"`
		TTL      int    `json:"ttl"`
	} `json:"data"`
}

func TestDatabaseLeaseRenewAndRevoke(t *testing.T) {
	pg := testPostgres(t)
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	do := func(method, path string, body interface{}) (int, []byte, error) {
		var raw []byte
		if body != nil {
			raw, _ = json.Marshal(body)
		}
		return c.Request(method, path, "root", raw)
	}
	if status, body, err := do("POST", "sys/mounts/database", map[string]string{"type": "database"}); err != nil || status != 204 {
		t.Fatalf("mount: %d %s %v", status, body, err)
	}
	if status, body, err := do("POST", "database/config/pg", map[string]string{
		"plugin_name": "postgresql-database-plugin", "connection_url": pg.url, "username": "postgres",
		"password": pg.password, "allowed_roles": "app"}); err != nil || (status != 204 && status != 200) {
		t.Fatalf("config: %d %s %v", status, body, err)
	}
	if status, body, err := do("POST", "database/roles/app", map[string]interface{}{
		"db_name":               "pg",
		"creation_statements":   []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`},
		"revocation_statements": []string{`DROP ROLE IF EXISTS "{{name}}";`},
		"default_ttl":           "1h", "max_ttl": "24h"}); err != nil || status != 204 {
		t.Fatalf("role: %d %s %v", status, body, err)
	}

	status, body, err := do("GET", "database/creds/app", nil)
	var secret leaseResponse
	if err != nil || status != 200 || json.Unmarshal(body, &secret) != nil {
		t.Fatalf("creds: %d %s %v", status, body, err)
	}
	if !strings.HasPrefix(secret.LeaseID, "database/creds/app/") || secret.LeaseDuration != 3600 || !secret.Renewable {
		t.Fatalf("creds: %s", body)
	}
	user, password := secret.Data.Username, secret.Data.Password
	if out, err := pg.psql("SELECT current_user", user, password); err != nil || out != user {
		t.Fatalf("login as %s: %v: %s", user, err, out)
	}

	status, body, err = do("PUT", "sys/leases/renew", map[string]interface{}{"lease_id": secret.LeaseID, "increment": 600})
	var renewed leaseResponse
	if err != nil || status != 200 || json.Unmarshal(body, &renewed) != nil || renewed.LeaseID != secret.LeaseID ||
		renewed.LeaseDuration != 600 {
		t.Fatalf("renew: %d %s %v", status, body, err)
	}
	status, body, err = do("PUT", "sys/leases/lookup", map[string]string{"lease_id": secret.LeaseID})
	var looked leaseResponse
	if err != nil || status != 200 || json.Unmarshal(body, &looked) != nil || looked.Data.TTL < 590 || looked.Data.TTL > 600 {
		t.Fatalf("lookup after renew: %d %s %v", status, body, err)
	}

	status, body, err = do("PUT", "sys/leases/revoke", map[string]string{"lease_id": secret.LeaseID})
	if err != nil || status != 204 || body != nil {
		t.Fatalf("revoke: %d %s %v", status, body, err)
	}
	if pg.roleExists(t, user) {
		t.Fatalf("the database user %s still exists after the revoke returned", user)
	}
	if _, err := pg.psql("SELECT 1", user, password); err == nil {
		t.Fatalf("%s can still log in", user)
	}
	status, body, err = do("PUT", "sys/leases/lookup", map[string]string{"lease_id": secret.LeaseID})
	if err == nil || status != 400 || string(body) != `{"errors":["invalid lease"]}` {
		t.Fatalf("lookup after revoke: %d %s %v", status, body, err)
	}
}
