/*
 * kvbench: KV v2 through libcoffer's C ABI (coffer_request and the fast paths coffer_kv_get /
 * coffer_kv_put), transit's fast paths on 64 bytes, and their floors measured in the same process
 * with the C libraries directly: a SQLite point read of the same stored row, an AES-256-GCM open
 * (OpenSSL EVP, one reused context) of a ciphertext of the same length, and an AES-256-GCM seal
 * of 64 bytes under a fresh random nonce (what transit's encrypt does, without base64).
 *
 *   kvbench DIRECTORY RESULTS.json [ITERATIONS]
 *
 * DIRECTORY receives the SQLite file. Built against an installed libcoffer (bench/c/Makefile);
 * bench/bench.py runs it with bench/malloccount preloaded to count allocations per operation.
 */
#define _GNU_SOURCE
#include <coffer.h>
#include <dlfcn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_FIGURES 16

struct figure {
    char name[96];
    int n;
    double p50, p90, p99, max, ops, allocs;
};

static struct figure figures[MAX_FIGURES];
static int figure_count;
static unsigned long long (*thread_allocations)(void);

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what) {
    fprintf(stderr, "kvbench: %s failed: %s\n", what, coffer_errmsg());
    exit(1);
}

/* With COFFER_BENCH_SAMPLES=<directory>, a figure's samples in the order they were taken go to
 * <directory>/<name>.txt, as bench/InProcess does: to see whether a tail recurs with the clock or the count. */
static void write_samples_in_order(const char *name, const uint64_t *samples, int n) {
    const char *directory = getenv("COFFER_BENCH_SAMPLES");
    if (!directory) return;
    char path[512];
    int at = snprintf(path, sizeof path, "%s/", directory);
    for (const char *c = name; *c && at < (int)sizeof path - 5; c++)
        path[at++] = ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')) ? *c : '-';
    snprintf(path + at, sizeof path - (size_t)at, ".txt");
    FILE *file = fopen(path, "w");
    if (!file) return;
    for (int i = 0; i < n; i++) fprintf(file, "%llu\n", (unsigned long long)samples[i]);
    fclose(file);
}

/* Records a figure from n samples (sorted here); its allocations are counted over a separate pass of fn. */
static void record(const char *name, uint64_t *samples, int n, void (*fn)(void *), void *arg) {
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += samples[i];
    qsort(samples, (size_t)n, sizeof(uint64_t), compare_u64);
    struct figure *f = &figures[figure_count++];
    snprintf(f->name, sizeof f->name, "%s", name);
    f->n = n;
    f->p50 = samples[n / 2] / 1000.0;
    f->p90 = samples[(int)(n * 0.90)] / 1000.0;
    f->p99 = samples[(int)(n * 0.99)] / 1000.0;
    f->max = samples[n - 1] / 1000.0;
    f->ops = n / (total / 1e9);
    f->allocs = -1;
    if (thread_allocations) {
        int passes = n < 1000 ? n : 1000;
        unsigned long long before = thread_allocations();
        for (int i = 0; i < passes; i++) fn(arg);
        f->allocs = (double)(thread_allocations() - before) / passes;
    }
    printf("  %-44s p50 %9.2f µs  p99 %9.2f µs  %10.0f ops/s", f->name, f->p50, f->p99, f->ops);
    if (f->allocs >= 0) printf(" %7.1f allocs", f->allocs);
    printf("\n");
    fflush(stdout);
}

static void warm_up(int n, void (*fn)(void *), void *arg) {
    int warm = n / 10 < 10 ? 10 : (n / 10 > 2000 ? 2000 : n / 10);
    for (int i = 0; i < warm; i++) fn(arg);
}

/* Times fn n times after a warm-up, then counts its allocations over a separate pass. */
static void measure(const char *name, int n, void (*fn)(void *), void *arg) {
    uint64_t *samples = malloc(sizeof(uint64_t) * (size_t)n);
    warm_up(n, fn, arg);
    for (int i = 0; i < n; i++) {
        uint64_t start = now_ns();
        fn(arg);
        samples[i] = now_ns() - start;
    }
    write_samples_in_order(name, samples, n);
    record(name, samples, n, fn, arg);
    free(samples);
}

/* The machine's own tail for an operation of a given length: xorshift rounds in registers (no memory, calls
 * or locks) matched to the operation's median, as bench/InProcess/Floor.swift's CPUSpin, so an operation's p99
 * can be read against what this machine does to anything that long (docs/benchmarks.md). */
static volatile uint64_t spin_sink;
static long spin_rounds = 1000;

static void spin(void *arg) {
    (void)arg;
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (long i = 0; i < spin_rounds; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    spin_sink = x;
}

/* Times fn per_round times into out; returns the round's median. */
static uint64_t timed_round(void (*fn)(void *), uint64_t *out, int per_round, uint64_t *scratch) {
    for (int i = 0; i < per_round; i++) {
        uint64_t start = now_ns();
        fn(NULL);
        out[i] = now_ns() - start;
    }
    memcpy(scratch, out, sizeof(uint64_t) * (size_t)per_round);
    qsort(scratch, (size_t)per_round, sizeof(uint64_t), compare_u64);
    return scratch[per_round / 2];
}

static void match_spin(uint64_t operation_median, uint64_t spin_median) {
    double rounds = (double)spin_rounds * (double)operation_median / (double)(spin_median ? spin_median : 1);
    spin_rounds = rounds < 1 ? 1 : (rounds > 1e9 ? 1000000000L : (long)rounds);
}

/* Times fn and the spin n times each in 20 alternating rounds (this VM's speed drifts by up to 2x within a
 * run), matching the spin to the median of fn's round before each of its own; records both figures. */
static void measure_beside_spin(const char *name, const char *spin_name, void (*fn)(void *), int n) {
    enum { ROUNDS = 20 };
    int per_round = n / ROUNDS < 100 ? 100 : n / ROUNDS;
    uint64_t *ours = malloc(sizeof(uint64_t) * (size_t)(per_round * ROUNDS));
    uint64_t *spins = malloc(sizeof(uint64_t) * (size_t)(per_round * ROUNDS));
    uint64_t *scratch = malloc(sizeof(uint64_t) * (size_t)per_round);
    /* Warm-up, and a first match; then each spin round is matched by the one before it. */
    uint64_t spin_median = timed_round(spin, spins, per_round, scratch);
    for (int round = 0; round < 4; round++) {
        match_spin(timed_round(fn, ours, per_round, scratch), spin_median);
        spin_median = timed_round(spin, spins, per_round, scratch);
    }
    for (int round = 0; round < ROUNDS; round++) {
        match_spin(timed_round(fn, ours + round * per_round, per_round, scratch), spin_median);
        spin_median = timed_round(spin, spins + round * per_round, per_round, scratch);
    }
    record(name, ours, per_round * ROUNDS, fn, NULL);
    record(spin_name, spins, per_round * ROUNDS, spin, NULL);
    free(ours);
    free(spins);
    free(scratch);
}

/* ---- Coffer ---- */

static coffer_t *db;
static char token[128];
static const char payload[] =
    "{\"username\":\"service-account\",\"password\":\"pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp\"}";

static char *request(const char *method, const char *path, const char *tok, const char *body) {
    int http;
    char *out = NULL;
    if (coffer_request(db, method, path, tok, body, body ? strlen(body) : 0, &http, &out, NULL) != COFFER_OK) die(path);
    return out;
}

/* Copies the string value of "key":"..." in json into dst. */
static void field(const char *json, const char *key, char *dst, size_t size) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *start = json ? strstr(json, pattern) : NULL;
    if (!start) {
        fprintf(stderr, "kvbench: no %s in %s\n", key, json ? json : "(null)");
        exit(1);
    }
    start += strlen(pattern);
    size_t n = strcspn(start, "\"");
    if (n >= size) n = size - 1;
    memcpy(dst, start, n);
    dst[n] = 0;
}

static void kv_get(void *arg) {
    (void)arg;
    char *data;
    int64_t version;
    if (coffer_kv_get(db, "secret", "app/db", token, 0, &data, NULL, &version) != COFFER_OK) die("coffer_kv_get");
    coffer_free(data);
}

static void request_get(void *arg) {
    (void)arg;
    int http;
    char *out;
    if (coffer_request(db, "GET", "secret/data/app/db", token, NULL, 0, &http, &out, NULL) != COFFER_OK) die("coffer_request GET");
    coffer_free(out);
}

static int write_counter;

static void kv_put(void *arg) {
    (void)arg;
    char path[32];
    snprintf(path, sizeof path, "app/w%d", write_counter++ % 100);
    if (coffer_kv_put(db, "secret", path, token, payload, sizeof payload - 1, COFFER_KV_NO_CAS, NULL) != COFFER_OK) die("coffer_kv_put");
}

static void request_put(void *arg) {
    (void)arg;
    static char body[256];
    char path[48];
    int http;
    char *out;
    if (!body[0]) snprintf(body, sizeof body, "{\"data\":%s}", payload);
    snprintf(path, sizeof path, "secret/data/app/w%d", write_counter++ % 100);
    if (coffer_request(db, "PUT", path, token, body, strlen(body), &http, &out, NULL) != COFFER_OK) die("coffer_request PUT");
    coffer_free(out);
}

static char transit_ciphertext[256];
static const unsigned char transit_plaintext[64] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void transit_encrypt(void *arg) {
    (void)arg;
    char *out;
    if (coffer_transit_encrypt(db, "transit", "bench", token, transit_plaintext, 64, NULL, 0, &out, NULL) != COFFER_OK)
        die("coffer_transit_encrypt");
    coffer_free(out);
}

static void transit_decrypt(void *arg) {
    (void)arg;
    void *out;
    size_t n;
    if (coffer_transit_decrypt(db, "transit", "bench", token, transit_ciphertext, strlen(transit_ciphertext), NULL, 0, &out, &n)
        != COFFER_OK)
        die("coffer_transit_decrypt");
    coffer_free(out);
}

/* ---- The floor ---- */

static sqlite3_stmt *floor_statement;
static char floor_key[512];
static unsigned char floor_buffer[1 << 16];

static void sqlite_read(void *arg) {
    (void)arg;
    sqlite3_bind_text(floor_statement, 1, floor_key, -1, SQLITE_STATIC);
    if (sqlite3_step(floor_statement) != SQLITE_ROW) {
        fprintf(stderr, "kvbench: the floor row is gone\n");
        exit(1);
    }
    int n = sqlite3_column_bytes(floor_statement, 0);
    memcpy(floor_buffer, sqlite3_column_blob(floor_statement, 0), (size_t)n);
    sqlite3_reset(floor_statement);
}

static struct {
    EVP_CIPHER_CTX *ctx;
    EVP_CIPHER *cipher;
    unsigned char key[32], nonce[12], aad[600], sealed[1 << 16], out[1 << 16];
    int aad_len, length;
} gcm;

static void aes_open(void *arg) {
    (void)arg;
    int len;
    if (EVP_DecryptInit_ex2(gcm.ctx, gcm.cipher, gcm.key, gcm.nonce, NULL) != 1
        || EVP_DecryptUpdate(gcm.ctx, NULL, &len, gcm.aad, gcm.aad_len) != 1
        || EVP_DecryptUpdate(gcm.ctx, gcm.out, &len, gcm.sealed, gcm.length) != 1
        || EVP_CIPHER_CTX_ctrl(gcm.ctx, EVP_CTRL_GCM_SET_TAG, 16, gcm.sealed + gcm.length) != 1
        || EVP_DecryptFinal_ex(gcm.ctx, gcm.out + len, &len) != 1) {
        fprintf(stderr, "kvbench: the AES-GCM floor failed to authenticate\n");
        exit(1);
    }
}

/* What transit's encrypt must do at least: a fresh random nonce and an AES-256-GCM seal of 64 bytes. */
static void aes_seal_64(void *arg) {
    (void)arg;
    unsigned char nonce[12], out[64 + 16];
    int len;
    if (RAND_bytes(nonce, 12) != 1 || EVP_EncryptInit_ex2(gcm.ctx, gcm.cipher, gcm.key, nonce, NULL) != 1
        || EVP_EncryptUpdate(gcm.ctx, out, &len, transit_plaintext, 64) != 1 || EVP_EncryptFinal_ex(gcm.ctx, out + len, &len) != 1
        || EVP_CIPHER_CTX_ctrl(gcm.ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 64) != 1) {
        fprintf(stderr, "kvbench: the AES-GCM seal floor failed\n");
        exit(1);
    }
}

static int row_length;

static void prepare_floor(const char *database) {
    sqlite3 *conn;
    if (sqlite3_open_v2(database, &conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) exit(1);
    sqlite3_stmt *find;
    sqlite3_prepare_v2(conn, "SELECT key, length(value) FROM entries WHERE key LIKE 'logical/%/versions/app/db/%'", -1, &find, NULL);
    if (sqlite3_step(find) != SQLITE_ROW) {
        fprintf(stderr, "kvbench: no stored version row for app/db\n");
        exit(1);
    }
    snprintf(floor_key, sizeof floor_key, "%s", (const char *)sqlite3_column_text(find, 0));
    row_length = sqlite3_column_int(find, 1);
    sqlite3_finalize(find);
    sqlite3_prepare_v2(conn, "SELECT value FROM entries WHERE key = ?1", -1, &floor_statement, NULL);

    /* A ciphertext of the row's length: 5-byte header, 12-byte nonce, ciphertext, 16-byte tag. The
       associated data is the header and the path, as the barrier's. */
    gcm.length = row_length - 33;
    gcm.ctx = EVP_CIPHER_CTX_new();
    gcm.cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    RAND_bytes(gcm.key, 32);
    RAND_bytes(gcm.nonce, 12);
    memset(gcm.aad, 0, 5);
    gcm.aad_len = 5 + snprintf((char *)gcm.aad + 5, sizeof gcm.aad - 5, "%s", floor_key);
    unsigned char plain[1 << 16];
    memset(plain, 'a', (size_t)gcm.length);
    int len;
    EVP_EncryptInit_ex2(gcm.ctx, gcm.cipher, gcm.key, gcm.nonce, NULL);
    EVP_EncryptUpdate(gcm.ctx, NULL, &len, gcm.aad, gcm.aad_len);
    EVP_EncryptUpdate(gcm.ctx, gcm.sealed, &len, plain, gcm.length);
    EVP_EncryptFinal_ex(gcm.ctx, gcm.sealed + len, &len);
    EVP_CIPHER_CTX_ctrl(gcm.ctx, EVP_CTRL_GCM_GET_TAG, 16, gcm.sealed + gcm.length);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: kvbench DIRECTORY RESULTS.json [ITERATIONS]\n");
        return 2;
    }
    int iterations = argc > 3 ? atoi(argv[3]) : 50000;
    thread_allocations = (unsigned long long (*)(void))dlsym(RTLD_DEFAULT, "malloccount_thread");

    char database[1024], config[1200], body[256], key[128], root[128];
    snprintf(database, sizeof database, "%s/c.db", argv[1]);
    snprintf(config, sizeof config, "{\"storage\": {\"type\": \"sqlite\", \"path\": \"%s\"}}", database);
    if (coffer_open(config, &db) != COFFER_OK) die("coffer_open");
    char *out = request("PUT", "sys/init", NULL, "{\"secret_shares\": 1, \"secret_threshold\": 1}");
    field(out, "root_token", root, sizeof root);
    char *keys = strstr(out, "\"keys\":[\"");
    if (!keys) die("sys/init keys");
    snprintf(key, sizeof key, "%.66s", keys + 9);
    coffer_free(out);
    out = request("GET", "sys/seal-status", NULL, NULL);
    int sealed = strstr(out, "\"sealed\":true") != NULL;
    coffer_free(out);
    if (sealed) {
        snprintf(body, sizeof body, "{\"key\": \"%s\"}", key);
        coffer_free(request("PUT", "sys/unseal", NULL, body));
    }
    coffer_free(request("POST", "sys/mounts/secret", root, "{\"type\": \"kv\", \"options\": {\"version\": \"2\"}}"));
    coffer_free(request("POST", "sys/mounts/transit", root, "{\"type\": \"transit\"}"));
    coffer_free(request("POST", "transit/keys/bench", root, "{}"));
    coffer_free(request("PUT", "sys/policies/acl/reader", root,
                        "{\"policy\": \"path \\\"secret/data/app/*\\\" { capabilities = [\\\"read\\\", \\\"create\\\", \\\"update\\\"] }\\n"
                        "path \\\"transit/*\\\" { capabilities = [\\\"update\\\"] }\"}"));
    out = request("POST", "auth/token/create", root, "{\"policies\": [\"reader\"], \"ttl\": \"1h\"}");
    field(out, "client_token", token, sizeof token);
    coffer_free(out);
    if (coffer_kv_put(db, "secret", "app/db", token, payload, sizeof payload - 1, COFFER_KV_NO_CAS, NULL) != COFFER_OK) die("coffer_kv_put");
    prepare_floor(database);
    char *ciphertext;
    if (coffer_transit_encrypt(db, "transit", "bench", token, transit_plaintext, 64, NULL, 0, &ciphertext, NULL) != COFFER_OK)
        die("coffer_transit_encrypt");
    snprintf(transit_ciphertext, sizeof transit_ciphertext, "%s", ciphertext);
    coffer_free(ciphertext);

    printf("C ABI (libcoffer %s): %d iterations per operation, one thread\n", coffer_version(), iterations);
    measure("c: coffer_kv_get (fast path)", iterations, kv_get, NULL);
    measure("c: coffer_request GET (wire JSON)", iterations, request_get, NULL);
    int writes = iterations / 20 < 200 ? 200 : iterations / 20;
    measure("c: coffer_kv_put (fast path, fsync)", writes, kv_put, NULL);
    measure("c: coffer_request PUT (wire JSON, fsync)", writes, request_put, NULL);
    measure("c: transit encrypt 64 B (fast path)", iterations, transit_encrypt, NULL);
    measure("c: transit decrypt 64 B (fast path)", iterations, transit_decrypt, NULL);
    measure("c floor: sqlite point read", iterations, sqlite_read, NULL);
    measure("c floor: aes-256-gcm open (EVP)", iterations, aes_open, NULL);
    measure("c floor: aes-256-gcm seal 64 B (EVP, random nonce)", iterations, aes_seal_64, NULL);
    measure_beside_spin("c: coffer_kv_get (beside a spin)", "c floor: cpu spin of coffer_kv_get's p50 (the machine's tail)",
                        kv_get, iterations);
    coffer_close(db);

    FILE *json = fopen(argv[2], "w");
    if (!json) return 1;
    fprintf(json, "{\"mode\": \"c\", \"iterations\": %d, \"libcoffer_version\": \"%s\", \"sqlite_version\": \"%s\", "
                  "\"openssl_version\": \"%s\", \"stored_row_bytes\": %d, \"results\": [",
            iterations, coffer_version(), sqlite3_libversion(), OpenSSL_version(OPENSSL_VERSION), row_length);
    for (int i = 0; i < figure_count; i++) {
        struct figure *f = &figures[i];
        fprintf(json, "%s\n  {\"name\": \"%s\", \"n\": %d, \"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, \"max_us\": %.3f, \"ops_per_s\": %.1f",
                i ? "," : "", f->name, f->n, f->p50, f->p90, f->p99, f->max, f->ops);
        if (f->allocs >= 0) fprintf(json, ", \"allocs_per_op\": %.2f", f->allocs);
        fprintf(json, "}");
    }
    fprintf(json, "\n]}\n");
    fclose(json);
    return 0;
}
