/* coffer_free wipes what it frees. The buffers the library returns hold secret values, tokens and
 * unseal keys; freed memory is not cleared by malloc, so without the wipe they stay readable in the
 * heap until reused. This program replaces free() (the library's calls resolve to it, as symbols of
 * the executable come first) and looks at each buffer it is asked to free while that buffer is
 * still allocated: every byte malloc_usable_size() reports must be zero when coffer_free frees it.
 * Not run under valgrind, which has its own free(). Exits 1 if any check fails.
 */
#define _GNU_SOURCE
#include <coffer.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void __libc_free(void *pointer);

static int failures = 0;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "FAIL %s:%d: %s (errmsg: \"%s\")\n", __FILE__, __LINE__, #cond, \
                    coffer_errmsg());                                                        \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

/* The buffer to look at, and what was seen when it was freed: -1 not freed, 0 had bytes, 1 all zero. */
static void *watched = NULL;
static int watched_was_zero = -1;

void free(void *pointer) {
    if (pointer != NULL && pointer == watched) {
        size_t size = malloc_usable_size(pointer), i;
        const unsigned char *bytes = (const unsigned char *)pointer;
        watched_was_zero = 1;
        for (i = 0; i < size; i++) {
            if (bytes[i] != 0) watched_was_zero = 0;
        }
        watched = NULL;
    }
    __libc_free(pointer);
}

/* Frees `buffer` through coffer_free and says whether it was all zeros by then. */
static int freed_wiped(void *buffer) {
    watched = buffer;
    watched_was_zero = -1;
    coffer_free(buffer);
    return watched_was_zero == 1;
}

int main(void) {
    coffer_t *h = NULL;
    char *out = NULL, *data = NULL;
    void *plain = NULL;
    size_t len = 0, plain_len = 0;
    int http = 0;
    int64_t version = 0;
    const char *secret = "{\"password\": \"wipe-me-0123456789\"}";

    CHECK(coffer_open("{\"dev\": {\"root_token\": \"root\"}}", &h) == COFFER_OK);
    if (h == NULL) return 1;

    /* A response of coffer_request holding a token. */
    CHECK(coffer_request(h, "POST", "auth/token/create", "root", "{}", 2, &http, &out, &len) == COFFER_OK);
    CHECK(out != NULL && strstr(out, "client_token") != NULL);
    CHECK(freed_wiped(out));

    /* A secret through the KV fast path. */
    CHECK(coffer_kv_put(h, "secret", "wipe", "root", secret, strlen(secret), COFFER_KV_NO_CAS, &version) == COFFER_OK);
    CHECK(coffer_kv_get(h, "secret", "wipe", "root", 0, &data, &len, &version) == COFFER_OK);
    CHECK(data != NULL && strstr(data, "wipe-me-0123456789") != NULL);
    CHECK(freed_wiped(data));

    /* A transit plaintext. */
    CHECK(coffer_request(h, "POST", "sys/mounts/transit", "root", "{\"type\": \"transit\"}", 19, &http, &out, &len) == COFFER_OK);
    coffer_free(out);
    CHECK(coffer_request(h, "POST", "transit/keys/k", "root", NULL, 0, &http, &out, &len) == COFFER_OK);
    coffer_free(out);
    CHECK(coffer_transit_encrypt(h, NULL, "k", "root", "wipe-me-too", 11, NULL, 0, &out, &len) == COFFER_OK);
    CHECK(coffer_transit_decrypt(h, NULL, "k", "root", out, len, NULL, 0, &plain, &plain_len) == COFFER_OK);
    coffer_free(out);
    CHECK(plain != NULL && plain_len == 11 && memcmp(plain, "wipe-me-too", 11) == 0);
    CHECK(freed_wiped(plain));

    /* The watch itself works: a buffer freed with plain free() is seen with its bytes. */
    out = (char *)malloc(32);
    if (out != NULL) {
        memset(out, 'x', 32);
        watched = out;
        free(out);
        CHECK(watched_was_zero == 0);
    }

    coffer_close(h);
    if (failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_wipe: all checks passed\n");
    return 0;
}
