/* coffer_subscribe / coffer_unsubscribe from C (include/coffer.h, docs/events.md): a KV write reaches
 * the callback on a library thread with Vault's metadata and no value; a bad token is refused;
 * unsubscribing from inside the callback returns at once (deferred), and no callback follows;
 * coffer_close ends a live subscription. Exits 1 if any check fails.
 */
#define _XOPEN_SOURCE 700
#include <coffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;

#define CHECK(cond)                                                                                      \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s (errmsg: \"%s\")\n", __FILE__, __LINE__, #cond, coffer_errmsg()); \
            failures++;                                                                                  \
        }                                                                                                \
    } while (0)

struct seen {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int count;
    char first[4096];
    pthread_t thread;
    coffer_t *h;
    uint64_t id;
    int unsubscribe_inside; /* 1: the callback unsubscribes itself */
    int unsubscribe_status;
};

static void on_event(const char *json, size_t len, void *ctx) {
    struct seen *s = ctx;
    pthread_mutex_lock(&s->lock);
    if (s->count == 0) {
        size_t n = len < sizeof s->first - 1 ? len : sizeof s->first - 1;
        memcpy(s->first, json, n);
        s->first[n] = 0;
        s->thread = pthread_self();
    }
    s->count++;
    pthread_mutex_unlock(&s->lock);
    if (s->unsubscribe_inside) s->unsubscribe_status = coffer_unsubscribe(s->h, s->id);
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* Waits up to 10 s for at least `n` events; returns the count. */
static int wait_for(struct seen *s, int n) {
    struct timespec deadline;
    int count;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&s->lock);
    while (s->count < n && pthread_cond_timedwait(&s->changed, &s->lock, &deadline) == 0) {
    }
    count = s->count;
    pthread_mutex_unlock(&s->lock);
    return count;
}

static void init_seen(struct seen *s, coffer_t *h) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    s->h = h;
}

int main(void) {
    coffer_t *h = NULL;
    struct seen s, inside;
    uint64_t id = 0;
    const char *data = "{\"password\":\"c-secret-value\"}";
    CHECK(coffer_open("{\"dev\": true}", &h) == COFFER_OK);

    init_seen(&s, h);
    CHECK(coffer_subscribe(h, "root", "kv*", on_event, &s, &s.id) == COFFER_OK);
    CHECK(s.id != 0);
    CHECK(coffer_kv_put(h, "secret", "app/db", "root", data, strlen(data), COFFER_KV_NO_CAS, NULL) == COFFER_OK);
    CHECK(wait_for(&s, 1) >= 1);
    CHECK(strstr(s.first, "\"event_type\":\"kv-v2/data-write\"") != NULL);
    CHECK(strstr(s.first, "\"path\":\"secret/data/app/db\"") != NULL);
    CHECK(strstr(s.first, "\"current_version\":\"1\"") != NULL);
    CHECK(strstr(s.first, "c-secret-value") == NULL);
    CHECK(!pthread_equal(s.thread, pthread_self()));
    CHECK(coffer_unsubscribe(h, s.id) == COFFER_OK);
    CHECK(coffer_unsubscribe(h, s.id) == COFFER_ENOTFOUND);

    CHECK(coffer_subscribe(h, "not-a-token", "kv*", on_event, &s, &id) == COFFER_EPERM);
    CHECK(coffer_subscribe(h, "root", "", on_event, &s, &id) == COFFER_EINVALID);
    CHECK(coffer_subscribe(h, "root", "kv*", NULL, &s, &id) == COFFER_EINVALID);

    init_seen(&inside, h);
    inside.unsubscribe_inside = 1;
    CHECK(coffer_subscribe(h, "root", "kv*", on_event, &inside, &inside.id) == COFFER_OK);
    CHECK(coffer_kv_put(h, "secret", "a", "root", data, strlen(data), COFFER_KV_NO_CAS, NULL) == COFFER_OK);
    CHECK(coffer_kv_put(h, "secret", "b", "root", data, strlen(data), COFFER_KV_NO_CAS, NULL) == COFFER_OK);
    CHECK(wait_for(&inside, 1) == 1);
    CHECK(inside.unsubscribe_status == COFFER_OK);

    /* A live subscription when the handle closes: coffer_close ends it. */
    CHECK(coffer_subscribe(h, "root", "*", on_event, &s, &id) == COFFER_OK);
    coffer_close(h);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_events: all checks passed\n");
    return 0;
}
