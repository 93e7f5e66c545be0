/* A database lease through the C ABI (issue 15): a dev Coffer mounts the database engine, points it
 * at the real PostgreSQL that `make test-bindings` starts (COFFER_TEST_PG_URL, COFFER_TEST_PG_PORT,
 * COFFER_TEST_PG_PASSWORD; a missing variable is a failure, not a skip), reads credentials, logs in
 * with them through the real psql, renews the lease (lease_duration changes), revokes it and checks
 * that the user is gone. Exits 1 if any check fails, naming each one that did.
 */
#define _XOPEN_SOURCE 700
#include <coffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "FAIL %s:%d: %s (errmsg: \"%s\")\n", __FILE__, __LINE__, #cond, \
                    coffer_errmsg());                                                        \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

static const char *pg_url, *pg_port, *pg_password;

static int contains(const char *text, const char *part) { return text != NULL && strstr(text, part) != NULL; }

static int request(coffer_t *h, const char *method, const char *path, const char *body, int *http, char **out) {
    *out = NULL;
    return coffer_request(h, method, path, "root", body, body ? strlen(body) : 0, http, out, NULL);
}

/* Reads the string value that follows `"name":"` in a JSON text into buf. */
static int json_string(const char *json, const char *name, char *buf, size_t size) {
    char pattern[64];
    const char *start, *end;
    if (json == NULL) return 0;
    snprintf(pattern, sizeof pattern, "\"%s\":\"", name);
    start = strstr(json, pattern);
    if (start == NULL) return 0;
    start += strlen(pattern);
    end = strchr(start, '"');
    if (end == NULL || (size_t)(end - start) >= size) return 0;
    memcpy(buf, start, (size_t)(end - start));
    buf[end - start] = '\0';
    return 1;
}

/* Runs `sql` with the real psql as `user` (PGPASSWORD from the environment); the trimmed output in buf.
   Returns psql's exit status. `user` and `sql` must not contain a double quote or a backslash. */
static int psql(const char *user, const char *password, const char *sql, char *buf, size_t size) {
    char command[1024];
    FILE *p;
    size_t n = 0;
    int status;
    setenv("PGPASSWORD", password, 1);
    setenv("PGCONNECT_TIMEOUT", "5", 1);
    setenv("PGSSLMODE", "disable", 1);
    snprintf(command, sizeof command,
             "/usr/bin/psql -X -q -A -t -h 127.0.0.1 -p %s -U '%s' -d postgres -c \"%s\" 2>&1", pg_port, user, sql);
    p = popen(command, "r");
    if (p == NULL) return -1;
    n = fread(buf, 1, size - 1, p);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = '\0';
    status = pclose(p);
    return status;
}

static int role_count(const char *user) {
    char sql[256], out[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_roles WHERE rolname = '%s'", user);
    if (psql("postgres", pg_password, sql, out, sizeof out) != 0) {
        fprintf(stderr, "psql as postgres failed: %s\n", out);
        return -1;
    }
    return atoi(out);
}

int main(void) {
    coffer_t *h = NULL;
    char *out = NULL;
    int http = 0;
    char body[2048], lease[256], user[128], password[128], login[256];

    pg_url = getenv("COFFER_TEST_PG_URL");
    pg_port = getenv("COFFER_TEST_PG_PORT");
    pg_password = getenv("COFFER_TEST_PG_PASSWORD");
    if (pg_url == NULL || pg_port == NULL || pg_password == NULL) {
        fprintf(stderr, "FAIL: COFFER_TEST_PG_URL, COFFER_TEST_PG_PORT and COFFER_TEST_PG_PASSWORD must be set "
                        "(make test-bindings starts a PostgreSQL and sets them)\n");
        return 1;
    }

    CHECK(coffer_open("{\"dev\": true}", &h) == COFFER_OK);
    if (h == NULL) return 1;

    CHECK(request(h, "POST", "sys/mounts/database", "{\"type\":\"database\"}", &http, &out) == COFFER_OK && http == 204);
    coffer_free(out);
    snprintf(body, sizeof body,
             "{\"plugin_name\":\"postgresql-database-plugin\",\"connection_url\":\"%s\",\"username\":\"postgres\","
             "\"password\":\"%s\",\"allowed_roles\":\"app\"}",
             pg_url, pg_password);
    CHECK(request(h, "POST", "database/config/pg", body, &http, &out) == COFFER_OK && (http == 204 || http == 200));
    if (http != 204 && http != 200) fprintf(stderr, "config: %d %s\n", http, out ? out : "");
    coffer_free(out);
    CHECK(request(h, "POST", "database/roles/app",
                  "{\"db_name\":\"pg\",\"creation_statements\":[\"CREATE ROLE \\\"{{name}}\\\" WITH LOGIN PASSWORD "
                  "'{{password}}' VALID UNTIL '{{expiration}}';\"],"
                  "\"revocation_statements\":[\"DROP ROLE IF EXISTS \\\"{{name}}\\\";\"],"
                  "\"default_ttl\":\"1h\",\"max_ttl\":\"24h\"}",
                  &http, &out) == COFFER_OK &&
          http == 204);
    coffer_free(out);

    /* Credentials, with a lease. */
    CHECK(request(h, "GET", "database/creds/app", NULL, &http, &out) == COFFER_OK && http == 200);
    CHECK(json_string(out, "lease_id", lease, sizeof lease) && strncmp(lease, "database/creds/app/", 19) == 0);
    CHECK(json_string(out, "username", user, sizeof user) && json_string(out, "password", password, sizeof password));
    CHECK(contains(out, "\"lease_duration\":3600") && contains(out, "\"renewable\":true"));
    coffer_free(out);
    if (failures > 0) return 1;
    CHECK(psql(user, password, "SELECT current_user", login, sizeof login) == 0 && strcmp(login, user) == 0);
    CHECK(role_count(user) == 1);

    /* Renew: the lease's duration becomes the increment. */
    snprintf(body, sizeof body, "{\"lease_id\":\"%s\",\"increment\":600}", lease);
    CHECK(request(h, "PUT", "sys/leases/renew", body, &http, &out) == COFFER_OK && http == 200);
    CHECK(contains(out, "\"lease_duration\":600") && contains(out, lease));
    coffer_free(out);
    snprintf(body, sizeof body, "{\"lease_id\":\"%s\"}", lease);
    CHECK(request(h, "PUT", "sys/leases/lookup", body, &http, &out) == COFFER_OK && http == 200);
    CHECK(contains(out, "\"ttl\":600") || contains(out, "\"ttl\":599"));
    coffer_free(out);

    /* Revoke (sync by default): the user is gone when it returns, and so is the lease. */
    CHECK(request(h, "PUT", "sys/leases/revoke", body, &http, &out) == COFFER_OK && http == 204 && out == NULL);
    coffer_free(out);
    CHECK(role_count(user) == 0);
    CHECK(psql(user, password, "SELECT current_user", login, sizeof login) != 0);
    CHECK(request(h, "PUT", "sys/leases/lookup", body, &http, &out) == COFFER_EINVALID && http == 400);
    CHECK(contains(out, "invalid lease"));
    coffer_free(out);

    coffer_close(h);
    if (failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_database: all checks passed\n");
    return 0;
}
