/* An embedded replica from C (docs/raft.md, "Embedded replicas"): this process joins a cofferd cluster as a
 * non-voting learner, keeps an encrypted copy of the vault in DIRECTORY, and answers reads from it in process.
 * Writes go to the cluster's active node. Build it with pkg-config:
 *
 *   cc -std=c99 replica.c $(pkg-config --cflags --libs coffer) -o replica
 *
 * and run it next to a cluster whose vault is initialised, unsealed and has KV v2 at secret/:
 *
 *   COFFER_TOKEN=<token> COFFER_UNSEAL_KEY=<unseal key> \
 *       ./replica http://10.0.0.1:8200 10.0.0.7:8201 /var/lib/app/replica [app/config]
 *
 *   API_ADDR      the API address of a cluster node (any node: the replica asks it to join)
 *   CLUSTER_ADDR  host:port of this process's own Raft port, which the cluster's nodes connect to (it may change
 *                 between runs on one DIRECTORY: once unsealed, the replica tells the cluster its new address)
 *   DIRECTORY     where the replica keeps its copy and its Raft log (kept across runs)
 *   SECRET        the KV v2 secret under secret/ to read (default app/config)
 *   COFFER_TOKEN       the token for reads and writes
 *   COFFER_UNSEAL_KEY  an unseal key (Shamir; with a threshold above 1, send each share to sys/unseal as below)
 *   COFFER_NODE_ID     the replica's name in the cluster (default c-replica; unique per replica)
 *
 * The token and key are taken from the environment, not argv, so that `ps` does not show them. It reads
 * SECRET, writes secret/app/from-c (through the active node), waits with coffer_replica_sync until its own
 * replica has applied that write, reads it back, and closes. It prints what it did; on a failure it prints
 * the library's message and exits 1. JSON answers are picked apart with strstr to keep the example free of
 * dependencies; a real program would use a JSON library.
 */
#define _POSIX_C_SOURCE 200809L
#include <coffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long to wait for the join, the unseal and the catch-up, in seconds. */
#define WAIT_SECONDS 120

/* Reports the failure of a coffer_* call: the library's message is valid until the next coffer_* call. */
static int failed(int status, const char *what) {
    fprintf(stderr, "%s: %s (%s)\n", what, coffer_errmsg(), coffer_strerror(status));
    return 1;
}

/* Appends `s` to `out` as the inside of a JSON string (quotes, backslashes and control characters escaped).
   Returns 0 when it does not fit in `size` bytes. */
static int json_append(char *out, size_t size, const char *s) {
    size_t n = strlen(out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char piece[8];
        if (c == '"' || c == '\\') {
            snprintf(piece, sizeof piece, "\\%c", c);
        } else if (c < 0x20) {
            snprintf(piece, sizeof piece, "\\u%04x", c);
        } else {
            piece[0] = (char)c;
            piece[1] = '\0';
        }
        size_t len = strlen(piece);
        if (n + len + 1 > size) return 0;
        memcpy(out + n, piece, len + 1);
        n += len;
    }
    return 1;
}

/* Builds a JSON text from a format whose only conversions are %s (each replaced by a JSON-escaped argument).
   Returns 0 when it does not fit. */
static int json_format(char *out, size_t size, const char *format, const char *a, const char *b, const char *c,
                       const char *d, const char *e) {
    const char *args[5] = {a, b, c, d, e};
    int next = 0;
    size_t n = 0;
    out[0] = '\0';
    for (const char *p = format; *p; p++) {
        if (p[0] == '%' && p[1] == 's' && next < 5) {
            if (!json_append(out, size, args[next++])) return 0;
            n = strlen(out);
            p++;
        } else {
            if (n + 2 > size) return 0;
            out[n++] = *p;
            out[n] = '\0';
        }
    }
    return 1;
}

/* The text after "key": in a JSON answer (whitespace skipped), or NULL. Good enough for the flat fields read
   here; it does not know about nesting. */
static const char *json_field(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = json ? strstr(json, pattern) : NULL;
    if (!p) return NULL;
    p += strlen(pattern);
    while (*p == ' ') p++;
    return p;
}

/* A numeric field of a JSON answer, or -1. */
static long long json_number(const char *json, const char *key) {
    const char *p = json_field(json, key);
    return p ? strtoll(p, NULL, 10) : -1;
}

/* A GET of the API on the replica itself (answered in process). On success *out holds the answer, which the
   caller releases with coffer_free. */
static int get(coffer_t *h, const char *path, char **out) {
    int http = 0;
    return coffer_request(h, "GET", path, NULL, NULL, 0, &http, out, NULL);
}

/* Seconds on a clock that does not jump. */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Waits 20 ms between two looks at the replica's state. */
static void pause_briefly(void) {
    struct timespec t = {0, 20 * 1000 * 1000};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    const char *token = getenv("COFFER_TOKEN"), *key = getenv("COFFER_UNSEAL_KEY");
    const char *node_id = getenv("COFFER_NODE_ID") ? getenv("COFFER_NODE_ID") : "c-replica";
    const char *secret = argc == 5 ? argv[4] : "app/config";
    char config[4096], body[1024], pid[32], leader[256] = "";
    char *out = NULL, *data = NULL;
    int http = 0, status, code = 1;
    int64_t version = 0, written = 0;
    coffer_t *h = NULL;
    long long applied = 0;
    double deadline;

    if ((argc != 4 && argc != 5) || !token || !*token || !key || !*key) {
        fprintf(stderr,
                "usage: COFFER_TOKEN=... COFFER_UNSEAL_KEY=... %s API_ADDR CLUSTER_ADDR DIRECTORY [SECRET]\n",
                argv[0]);
        return 2;
    }
    printf("libcoffer %s (ABI %d)\n", coffer_version(), coffer_abi_version());

    /* 1. Open a replica: storage "raft" with the cluster's API address to join through. It opens sealed and
          starts asking that node for a join challenge (the seal's configuration and the wrapped root key). */
    if (!json_format(config, sizeof config,
                     "{\"storage\": {\"type\": \"raft\", \"path\": \"%s\", \"node_id\": \"%s\","
                     " \"cluster_addr\": \"%s\", \"retry_join\": [\"%s\"]}}",
                     argv[3], node_id, argv[2], argv[1], NULL)) {
        fprintf(stderr, "the arguments are too long\n");
        return 2;
    }
    status = coffer_open(config, &h);
    if (status != COFFER_OK) return failed(status, "open");
    printf("opened a replica in %s as %s, joining through %s\n", argv[3], node_id, argv[1]);

    /* 2. Once the challenge has arrived, sys/seal-status reports the cluster's seal ("t", the threshold), and
          the replica takes unseal keys as any node: with them it proves to the active node that it holds the
          vault's keys, is admitted as a learner, receives the data, and unseals. */
    deadline = now() + WAIT_SECONDS;
    for (;;) {
        if ((status = get(h, "sys/seal-status", &out)) != COFFER_OK) {
            code = failed(status, "seal-status");
            goto done;
        }
        int ready = json_number(out, "t") > 0;
        coffer_free(out);
        out = NULL;
        if (ready) break;
        if (now() > deadline) {
            fprintf(stderr, "no join challenge from %s after %d s\n", argv[1], WAIT_SECONDS);
            goto done;
        }
        pause_briefly();
    }
    if (!json_format(body, sizeof body, "{\"key\": \"%s\"}", key, NULL, NULL, NULL, NULL)) {
        fprintf(stderr, "COFFER_UNSEAL_KEY is too long\n");
        goto done;
    }
    status = coffer_request(h, "PUT", "sys/unseal", NULL, body, strlen(body), &http, &out, NULL);
    memset(body, 0, sizeof body); /* the key has been handed over; do not keep a copy of it */
    coffer_free(out);             /* coffer_free zeroes the buffer first */
    out = NULL;
    if (status != COFFER_OK) {
        code = failed(status, "unseal");
        goto done;
    }

    /* 3. Wait until it is unsealed and caught up: sys/leader on the replica reports the commit index the
          leader has told it of and the index it has applied. (A vault reports "sealed":false only once its
          mounts, tokens and policies are loaded.) */
    for (;;) {
        if ((status = get(h, "sys/seal-status", &out)) != COFFER_OK) {
            code = failed(status, "seal-status");
            goto done;
        }
        int unsealed = strstr(out, "\"sealed\":false") != NULL;
        coffer_free(out);
        out = NULL;
        if (unsealed) {
            if ((status = get(h, "sys/leader", &out)) != COFFER_OK) {
                code = failed(status, "leader");
                goto done;
            }
            long long committed = json_number(out, "raft_committed_index");
            const char *address = json_field(out, "leader_address");
            if (committed > 0 && json_number(out, "raft_applied_index") >= committed) {
                applied = committed;
                if (address && *address == '"')
                    snprintf(leader, sizeof leader, "%.*s", (int)strcspn(address + 1, "\""), address + 1);
            }
            coffer_free(out);
            out = NULL;
            if (applied > 0) break;
        }
        if (now() > deadline) {
            fprintf(stderr, "the replica did not unseal and catch up within %d s\n", WAIT_SECONDS);
            goto done;
        }
        pause_briefly();
    }
    printf("unsealed and caught up at index %lld; the active node is %s\n", applied, leader);

    /* 4. A read is answered in process from the replica: no network. */
    status = coffer_kv_get(h, "secret", secret, token, 0, &data, NULL, &version);
    if (status != COFFER_OK) {
        code = failed(status, "read");
        goto done;
    }
    printf("read secret/%s version %lld in process: %s\n", secret, (long long)version, data);
    coffer_free(data);
    data = NULL;

    /* 5. A write is sent to the active node, which answers (its errors too: a token that may not write gets
          its "permission denied"). */
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    json_format(body, sizeof body, "{\"written_by\": \"replica.c\", \"pid\": \"%s\"}", pid, NULL, NULL, NULL, NULL);
    status = coffer_kv_put(h, "secret", "app/from-c", token, body, strlen(body), COFFER_KV_NO_CAS, &written);
    if (status != COFFER_OK) {
        code = failed(status, "write");
        goto done;
    }
    printf("wrote secret/app/from-c version %lld through the active node\n", (long long)written);

    /* 6. Read your writes: coffer_replica_sync returns once this replica has applied every write this process
          made, so the next read sees the one above. Without it, a read right after a write may still see the
          replica as it was (it is milliseconds behind). */
    status = coffer_replica_sync(h, 5000);
    if (status != COFFER_OK) {
        code = failed(status, "replica sync");
        goto done;
    }
    status = coffer_kv_get(h, "secret", "app/from-c", token, 0, &data, NULL, &version);
    if (status != COFFER_OK) {
        code = failed(status, "read back");
        goto done;
    }
    if (version != written) {
        fprintf(stderr, "read back version %lld, wrote %lld\n", (long long)version, (long long)written);
        goto done;
    }
    printf("read back secret/app/from-c version %lld in process: %s\n", (long long)version, data);
    code = 0;

done:
    coffer_free(data);
    coffer_free(out);
    coffer_close(h); /* seals the replica and stops its Raft node; its copy stays in DIRECTORY */
    if (code == 0) printf("closed\n");
    return code;
}
