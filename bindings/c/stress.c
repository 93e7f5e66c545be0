/* 32 threads reading and writing through one handle over one SQLite file. Each thread writes its
 * own secret again and again and reads it back (fast path and coffer_request), reads a secret all
 * threads share, and makes a call that fails on purpose to check that the last-error message is
 * per thread; then closes a second handle under 8 running readers. Exits 1 on any wrong answer.
 * Usage: stress [ROUNDS] (default 100).
 */
#define _XOPEN_SOURCE 700
#include <coffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>

#define THREADS 32

static int rounds = 100; /* argv[1] overrides: valgrind runs a few */
static coffer_t *handle;
static char token[128];
static int failures = 0;
static pthread_mutex_t failures_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(int thread, int round, const char *what) {
    pthread_mutex_lock(&failures_lock);
    failures++;
    fprintf(stderr, "FAIL thread %d round %d: %s (errmsg: \"%s\")\n", thread, round, what, coffer_errmsg());
    pthread_mutex_unlock(&failures_lock);
}

static void *worker(void *arg) {
    int id = (int)(size_t)arg;
    int round;
    char path[64], value[128], expected[160], request_path[96];
    for (round = 1; round <= rounds; round++) {
        char *data = NULL, *out = NULL;
        int64_t version = 0;
        int http = 0;
        snprintf(path, sizeof path, "threads/t%d", id);
        snprintf(value, sizeof value, "{\"thread\":%d,\"round\":%d}", id, round);
        if (coffer_kv_put(handle, "secret", path, token, value, strlen(value), round - 1, &version) != COFFER_OK)
            fail(id, round, "put");
        else if (version != round)
            fail(id, round, "put returned the wrong version");

        if (coffer_kv_get(handle, "secret", path, token, 0, &data, NULL, &version) != COFFER_OK)
            fail(id, round, "get");
        else {
            snprintf(expected, sizeof expected, "{\"round\":%d,\"thread\":%d}", round, id);
            if (strcmp(data, expected) != 0 || version != round) fail(id, round, "get read another value");
        }
        coffer_free(data);

        snprintf(request_path, sizeof request_path, "secret/data/%s", path);
        if (coffer_request(handle, "GET", request_path, token, NULL, 0, &http, &out, NULL) != COFFER_OK || http != 200)
            fail(id, round, "request");
        else if (strstr(out, expected) == NULL)
            fail(id, round, "request read another value");
        coffer_free(out);

        if (coffer_kv_get(handle, "secret", "shared", token, 0, &data, NULL, NULL) != COFFER_OK ||
            strcmp(data, "{\"shared\":true}") != 0)
            fail(id, round, "shared read");
        coffer_free(data);

        /* A failure on this thread; other threads' successes must not clear or change its message. */
        if (coffer_kv_get(handle, "secret", "missing", token, 0, &data, NULL, NULL) != COFFER_ENOTFOUND)
            fail(id, round, "missing secret not reported");
        sched_yield();
        if (strstr(coffer_errmsg(), "secret/missing") == NULL) fail(id, round, "errmsg is not this thread's");
    }
    return NULL;
}

/* Phase two: threads reading while the main thread closes the handle under them. Every call must
 * answer COFFER_OK (before the close) or COFFER_EINVALID (after), never crash. */
static coffer_t *closing;
static int started = 0;
static pthread_mutex_t started_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t started_cond = PTHREAD_COND_INITIALIZER;

static void *reader(void *arg) {
    int id = (int)(size_t)arg, counted = 0, status, round = 0;
    do {
        char *data = NULL;
        status = coffer_kv_get(closing, NULL, "k", "root", 0, &data, NULL, NULL);
        coffer_free(data);
        if (status != COFFER_OK && status != COFFER_EINVALID) fail(id, round, "close under a running reader");
        if (!counted) {
            counted = 1;
            pthread_mutex_lock(&started_lock);
            started++;
            pthread_cond_signal(&started_cond);
            pthread_mutex_unlock(&started_lock);
        }
        round++;
    } while (status == COFFER_OK);
    return NULL;
}

static void close_under_readers(void) {
    pthread_t threads[8];
    int64_t version = 0;
    int i;
    if (coffer_open("{\"dev\": true}", &closing) != COFFER_OK ||
        coffer_kv_put(closing, NULL, "k", "root", "{\"v\":1}", 7, COFFER_KV_NO_CAS, &version) != COFFER_OK) {
        fail(-1, 0, "dev open");
        return;
    }
    for (i = 0; i < 8; i++) pthread_create(&threads[i], NULL, reader, (void *)(size_t)i);
    pthread_mutex_lock(&started_lock);
    while (started < 8) pthread_cond_wait(&started_cond, &started_lock);
    pthread_mutex_unlock(&started_lock);
    coffer_close(closing);
    for (i = 0; i < 8; i++) pthread_join(threads[i], NULL);
}

int main(int argc, char **argv) {
    char dir[] = "/tmp/coffer-stress-XXXXXX";
    char config[256], body[256], key[128] = "", command[300];
    char *out = NULL;
    int http = 0, i;
    int64_t version = 0;
    pthread_t threads[THREADS];

    if (argc > 1) rounds = atoi(argv[1]);
    if (rounds < 1) return 2;
    if (mkdtemp(dir) == NULL) return 1;
    snprintf(config, sizeof config, "{\"storage\":{\"type\":\"sqlite\",\"path\":\"%s/stress.db\"}}", dir);
    if (coffer_open(config, &handle) != COFFER_OK) {
        fprintf(stderr, "open: %s\n", coffer_errmsg());
        return 1;
    }
    strcpy(body, "{\"secret_shares\":1,\"secret_threshold\":1}");
    if (coffer_request(handle, "PUT", "sys/init", NULL, body, strlen(body), &http, &out, NULL) != COFFER_OK ||
        sscanf(strstr(out, "\"keys\":[\"") + 9, "%127[0-9a-f]", key) != 1 ||
        sscanf(strstr(out, "\"root_token\":\"") + 14, "%127[^\"]", token) != 1) {
        fprintf(stderr, "init: %s\n", coffer_errmsg());
        return 1;
    }
    coffer_free(out);
    /* Like Vault, init leaves the vault sealed: unseal it with the key just issued. */
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", key);
    if (coffer_request(handle, "PUT", "sys/unseal", NULL, body, strlen(body), &http, &out, NULL) != COFFER_OK) {
        fprintf(stderr, "unseal: %s\n", coffer_errmsg());
        return 1;
    }
    coffer_free(out);
    strcpy(body, "{\"type\":\"kv\",\"options\":{\"version\":\"2\"}}");
    if (coffer_request(handle, "POST", "sys/mounts/secret", token, body, strlen(body), &http, &out, NULL) != COFFER_OK ||
        coffer_kv_put(handle, "secret", "shared", token, "{\"shared\":true}", 15, COFFER_KV_NO_CAS, &version) != COFFER_OK) {
        fprintf(stderr, "setup: %s\n", coffer_errmsg());
        return 1;
    }

    for (i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, worker, (void *)(size_t)i);
    for (i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);

    /* Every thread's last version is on disk. */
    for (i = 0; i < THREADS; i++) {
        char path[64], *data = NULL;
        snprintf(path, sizeof path, "threads/t%d", i);
        if (coffer_kv_get(handle, "secret", path, token, 0, &data, NULL, &version) != COFFER_OK || version != rounds) {
            fprintf(stderr, "FAIL final read of %s\n", path);
            failures++;
        }
        coffer_free(data);
    }
    coffer_close(handle);
    close_under_readers();
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0) fprintf(stderr, "could not remove %s\n", dir);
    if (failures > 0) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("stress: %d threads x %d rounds through one handle, all answers right; closed under 8 readers safely\n",
           THREADS, rounds);
    return 0;
}
