/*
 * coffer.h: the C interface of Coffer, an embeddable secrets engine.
 *
 * This header is the contract (written by hand; the library is checked against it at compile
 * time). The promise of what may change and what never does is in docs/c-abi.md. In short:
 *   - functions, status codes and macros are only ever added, never renumbered, renamed or
 *     removed, while COFFER_ABI_VERSION (the 0 of libcoffer.so.0) stays the same;
 *   - the JSON that coffer_request() takes and returns is the Vault/OpenBao HTTP API's JSON.
 *
 * Conventions (as sqlite3.h and libgit2):
 *   - Every fallible function returns an int status: COFFER_OK (0) or a negative COFFER_E* code.
 *     The text of the last failure on the calling thread is coffer_errmsg().
 *   - Out-parameters come last. On failure they are set to NULL / 0 where the function says so.
 *   - Every buffer the library returns is owned by the caller and released with coffer_free().
 *   - Strings passed in are NUL-terminated UTF-8 and are only read during the call; the library
 *     keeps no pointer to caller memory.
 *   - A handle may be used from any number of threads at once.
 *   - NULL or malformed arguments return COFFER_EINVALID; the library never aborts the process
 *     because of an argument (running out of memory aside).
 */
#ifndef COFFER_H
#define COFFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versions ----------------------------------------------------------------------------- */

/** The version of this header. Compare with coffer_version() to detect a header/library mismatch. */
#define COFFER_VERSION_MAJOR 0
#define COFFER_VERSION_MINOR 1
#define COFFER_VERSION_PATCH 0
#define COFFER_VERSION "0.1.0"
/** MAJOR * 1000000 + MINOR * 1000 + PATCH, for #if comparisons. */
#define COFFER_VERSION_NUMBER 1000

/**
 * The ABI version: the number in the library's SONAME (libcoffer.so.0). It changes only when an
 * existing function's signature or meaning changes; additions keep it.
 */
#define COFFER_ABI_VERSION 0

/**
 * The version of the library actually loaded, e.g. "0.1.0" (static storage; never free it).
 * Thread-safe; never fails.
 */
const char *coffer_version(void);

/** The ABI version of the library actually loaded (COFFER_ABI_VERSION it was built with). Never fails. */
int coffer_abi_version(void);

/* ---- Status codes ------------------------------------------------------------------------- */
/* Numbers never change. New codes may be added; treat an unknown negative code as a failure.     */

/** Success. */
#define COFFER_OK 0
/** An argument or the request is malformed: NULL, not UTF-8, bad JSON, a bad path, a missing field. HTTP 400. */
#define COFFER_EINVALID -1
/** The vault is sealed; unseal it (sys/unseal) first. HTTP 503. */
#define COFFER_ESEALED -2
/** The token is missing, unknown or expired, or its policies do not allow the operation. HTTP 403. */
#define COFFER_EPERM -3
/** Nothing is stored at the path, or no handler serves it. HTTP 404. */
#define COFFER_ENOTFOUND -4
/** A precondition (check-and-set) did not hold. HTTP 400. */
#define COFFER_ECONFLICT -5
/** A dependency (HSM, audit device) cannot be reached; retrying later may work. HTTP 503. */
#define COFFER_EUNAVAILABLE -6
/** The storage backend failed to read or write. HTTP 500. */
#define COFFER_EIO -7
/** Memory could not be allocated. HTTP 500. */
#define COFFER_ENOMEM -8
/** A bug or an unexpected state; coffer_errmsg() says where. HTTP 500. */
#define COFFER_EINTERNAL -9
/** The path does not support the operation (method). HTTP 405. */
#define COFFER_EUNSUPPORTED -10
/** Stored data failed authentication (flipped, truncated or moved); the message names the path. HTTP 500. */
#define COFFER_EINTEGRITY -11
/** The vault is not initialised yet (sys/init). HTTP 400. */
#define COFFER_ENOTINIT -12
/** The vault is already initialised. HTTP 400. */
#define COFFER_EALREADYINIT -13
/** A rate-limit or lease-count quota refused the request; coffer_retry_after() says when to retry. HTTP 429. */
#define COFFER_ERATELIMIT -14
/** The storage file is not a Coffer database, or is damaged. HTTP 500. */
#define COFFER_ECORRUPT -15
/** No enabled audit device could record the request, so it was not processed (fail closed). HTTP 500. */
#define COFFER_EAUDIT -16

/**
 * A short, constant English description of a status code ("sealed", "permission denied"; "ok"
 * for COFFER_OK; "unknown status" for a number that is not a code). Static storage; never free
 * it. Thread-safe; never fails.
 */
const char *coffer_strerror(int status);

/**
 * The message of the most recent failed coffer_* call on the calling thread, e.g. "unknown
 * configuration key 'storage.paht'; known keys here: type, path". "" if the most recent call that
 * returns a status succeeded. Messages never contain a secret value, token or key.
 *
 * The string belongs to the library and stays valid until the next coffer_* call on the same
 * thread; copy it to keep it. Never returns NULL. Thread-safe (each thread has its own message).
 */
const char *coffer_errmsg(void);

/**
 * After a coffer_* call on the calling thread failed with COFFER_ERATELIMIT: whole seconds to wait
 * before retrying (what HTTP sends as Retry-After; 0 means the next window starts within a second).
 * -1 when the most recent call that returns a status did not fail with a rate-limit refusal that
 * names a time (a lease-count quota refusal names none: retry once leases are revoked).
 *
 * Thread-safe (each thread has its own value, as coffer_errmsg()); never fails. Added in 0.1.
 */
int coffer_retry_after(void);

/* ---- Handles ------------------------------------------------------------------------------ */

/** An open Coffer: storage, seal and the whole engine. Opaque: a coffer_t * is an id the library
    looks up, never dereferenced, and never the same as the id of a handle closed before it (an id
    comes back only after 2^28 further coffer_open calls, normally), so a stale handle is refused. */
typedef struct coffer coffer_t;

/**
 * Opens a Coffer described by a JSON configuration, for example
 *
 *   {"storage": {"type": "sqlite", "path": "/var/lib/app/coffer.db"}}
 *
 * Keys: "storage" {"type": "sqlite", "path"} or {"type": "memory"} (required unless "dev");
 * "seal" {"type": "shamir"} (the default); "limits" {"max_entry_size": bytes, "read_cache_bytes":
 * bytes (0: no read cache)}; "dev": true or
 * {"root_token": "..."} for an in-memory vault that is initialised, unsealed, has "secret/" mounted
 * as KV v2 and root token "root" (as `bao server -dev`). An unknown key is an error naming it.
 * docs/c-abi.md lists every key.
 *
 * A new SQLite file is created; a Coffer opens sealed (or uninitialised): use coffer_request()
 * with "sys/init" and "sys/unseal".
 *
 * On success stores a new handle in *out; release it with coffer_close(). On failure sets *out to
 * NULL (when out is not NULL).
 *
 * Returns COFFER_OK; COFFER_EINVALID (NULL argument, bad JSON, unknown or mistyped key, a seal that
 * does not match the stored one); COFFER_EIO (the file cannot be opened or created);
 * COFFER_ECORRUPT (the file is not a Coffer database). Thread-safe.
 */
int coffer_open(const char *config_json, coffer_t **out);

/**
 * Seals and closes the handle. NULL is accepted and does nothing; closing a handle twice is an
 * error that is ignored. Calls still running on other threads finish normally; the storage is
 * closed when the last of them returns. Later calls with the handle return COFFER_EINVALID, also
 * after other handles have been opened.
 */
void coffer_close(coffer_t *h);

/* ---- The whole API -------------------------------------------------------------------------- */

/**
 * Performs any operation of the Vault/OpenBao HTTP API, with exactly the JSON the HTTP server
 * takes and returns.
 *
 *   method     "GET", "PUT", "POST", "PATCH", "DELETE" or "LIST" (upper case).
 *   path       the API path without "/v1/", optionally with a query: "secret/data/app",
 *              "secret/data/app?version=2", "sys/init", "sys/unseal", "sys/seal".
 *   token      the client token (X-Vault-Token), or NULL for unauthenticated paths (sys/init,
 *              sys/unseal, sys/seal-status, sys/health).
 *   body       the request's JSON object, body_len bytes (need not be NUL-terminated); NULL or
 *              body_len 0 for none.
 *   http_status  receives the HTTP status the server would answer (200, 204, 400, 403, 404, ...).
 *   out        receives the response body as a NUL-terminated JSON string of *out_len bytes
 *              (excluding the NUL), owned by the caller: release it with coffer_free(). NULL when
 *              there is no body (HTTP 204).
 *   out_len    may be NULL.
 *
 * Returns COFFER_OK when the operation succeeded, whatever the HTTP status (sys/health reports
 * the vault's state through it). When it failed, returns the negative code of the failure (for a
 * 404, COFFER_ENOTFOUND) and still fills *http_status and *out with the error response exactly as
 * HTTP sends it ({"errors": [...]}); coffer_errmsg() holds its message. When an argument itself is
 * invalid (NULL handle, NULL method or path, a string that is not UTF-8, NULL http_status or out)
 * returns COFFER_EINVALID with *http_status 0 and *out NULL.
 *
 * Thread-safe: any number of threads may call it at once on one handle.
 */
int coffer_request(coffer_t *h, const char *method, const char *path, const char *token, const char *body,
                   size_t body_len, int *http_status, char **out, size_t *out_len);

/**
 * Per-request options for coffer_request_ex(). Zero-initialise it and set struct_size to
 * sizeof(coffer_request_opts): fields added in later versions go at the end, and the library
 * reads only the fields that fit in the struct_size the caller passes, so a program built
 * against an older header keeps working.
 */
typedef struct coffer_request_opts {
    /** sizeof(coffer_request_opts) as the caller compiled it. */
    size_t struct_size;
    /** Wrap the answer (HTTP's X-Vault-Wrap-TTL): "60s", "5m", "300"; NULL or "0" for no wrapping.
     *  The response is then only a wrap_info with a single-use token for sys/wrapping/unwrap. */
    const char *wrap_ttl;
    /** The network address the caller acts for ("10.1.2.3"), as HTTP's client address: tokens
     *  and AppRole secret IDs bound to CIDR blocks are checked against it. NULL: none given
     *  (a CIDR-bound token is then refused). */
    const char *client_address;
    /** The namespace the call is for, as HTTP's X-Vault-Namespace ("team-a", "team-a/child"); it
     *  is joined with any namespace the path starts with. NULL or "": the root namespace, unless
     *  the path names one. Added after client_address: a caller built against a header without it
     *  passes a smaller struct_size, and the field is not read. */
    const char *ns;
} coffer_request_opts;

/**
 * coffer_request() with options (coffer_request_opts); opts may be NULL, which is
 * coffer_request(). Returns what coffer_request() returns; COFFER_EINVALID also when opts is not
 * NULL and opts->struct_size is smaller than the first version of the struct (16 bytes on LP64:
 * struct_size and wrap_ttl). Thread-safe.
 */
int coffer_request_ex(coffer_t *h, const char *method, const char *path, const char *token, const char *body,
                      size_t body_len, const coffer_request_opts *opts, int *http_status, char **out,
                      size_t *out_len);

/* ---- Fast paths ----------------------------------------------------------------------------- */
/* The same request path (token, policy, barrier) as coffer_request(), without the response      */
/* envelope or base64: KV version 2 and transit mounts.                                         */

/** Pass as `cas` to coffer_kv_put() to write without a check-and-set. */
#define COFFER_KV_NO_CAS (-1)

/**
 * Reads a KV v2 secret: the "data" object only.
 *
 *   mount      the mount path, e.g. "secret"; NULL means "secret".
 *   path       the secret's path under the mount, e.g. "app/db".
 *   version    the version to read; 0 for the current one.
 *   data_json  receives the secret's data as a NUL-terminated JSON object, e.g.
 *              {"password":"s3cret"}, owned by the caller: release it with coffer_free().
 *   data_len   receives its length (excluding the NUL); may be NULL.
 *   version_out  receives the version read; may be NULL.
 *
 * Returns COFFER_OK; COFFER_ENOTFOUND (no such secret, or the version is deleted or destroyed);
 * COFFER_EPERM; COFFER_ESEALED; COFFER_EINVALID; the other codes as coffer_request(). On failure
 * *data_json is NULL and *data_len and *version_out are 0. Thread-safe.
 */
int coffer_kv_get(coffer_t *h, const char *mount, const char *path, const char *token, int64_t version,
                  char **data_json, size_t *data_len, int64_t *version_out);

/**
 * Writes a new version of a KV v2 secret.
 *
 *   data_json  the secret's data: a JSON object of data_len bytes, e.g. {"password":"s3cret"}
 *              (need not be NUL-terminated).
 *   cas        COFFER_KV_NO_CAS, or the current version the write requires (0: only if the secret
 *              does not exist yet).
 *   version_out  receives the new version number; may be NULL.
 *
 * Returns COFFER_OK; COFFER_ECONFLICT (the check-and-set did not match: "check-and-set parameter
 * did not match the current version"); COFFER_EINVALID (data_json is not a JSON object); COFFER_EPERM; COFFER_ESEALED; the other codes as coffer_request(). On failure *version_out is 0.
 * Thread-safe.
 */
int coffer_kv_put(coffer_t *h, const char *mount, const char *path, const char *token, const char *data_json,
                  size_t data_len, int64_t cas, int64_t *version_out);

/**
 * Encrypts raw bytes with a transit key, as `transit/encrypt/<key>` does, without JSON or base64
 * on the way in.
 *
 *   mount      the transit mount, e.g. "transit"; NULL means "transit".
 *   key        the key's name. If it does not exist and the token may create it, an aes256-gcm96
 *              key is created, as Vault does.
 *   plaintext  plaintext_len bytes (may contain NULs; NULL only with a length of 0).
 *   context    the derivation context for a derived key (context_len bytes); NULL and 0 otherwise.
 *   ciphertext receives the ciphertext as Vault writes it, NUL-terminated ("vault:v1:..."), owned by
 *              the caller: release it with coffer_free().
 *   ciphertext_len  receives its length (excluding the NUL); may be NULL.
 *
 * Returns COFFER_OK; COFFER_EINVALID (a missing context for a derived key, a key type that cannot
 * encrypt, a bad argument); COFFER_EPERM; COFFER_ESEALED; the other codes as coffer_request(). On
 * failure *ciphertext is NULL and *ciphertext_len 0. Thread-safe.
 */
int coffer_transit_encrypt(coffer_t *h, const char *mount, const char *key, const char *token, const void *plaintext,
                           size_t plaintext_len, const void *context, size_t context_len, char **ciphertext,
                           size_t *ciphertext_len);

/**
 * Decrypts a transit ciphertext ("vault:vN:..." as coffer_transit_encrypt() or the HTTP API gave
 * it) back to raw bytes, as `transit/decrypt/<key>` does, without base64 on the way out.
 *
 *   ciphertext      ciphertext_len bytes of the "vault:vN:..." text (need not be NUL-terminated).
 *   context         as for coffer_transit_encrypt().
 *   plaintext       receives the plaintext, owned by the caller: release it with coffer_free(). It
 *                   is followed by a NUL that is not counted, so text can be used as a C string.
 *   plaintext_len   receives its length in bytes.
 *
 * Returns COFFER_OK; COFFER_EINVALID (a tampered ciphertext or one from another key, a version
 * below min_decryption_version, a wrong context, bad base64); COFFER_EPERM; COFFER_ESEALED; the
 * other codes as coffer_request(). On failure *plaintext is NULL and *plaintext_len 0. Thread-safe.
 */
int coffer_transit_decrypt(coffer_t *h, const char *mount, const char *key, const char *token, const char *ciphertext,
                           size_t ciphertext_len, const void *context, size_t context_len, void **plaintext,
                           size_t *plaintext_len);

/* ---- Metrics -------------------------------------------------------------------------------- */

/**
 * The handle's counters, gauges and latency summaries: the numbers `GET sys/metrics` serves over
 * HTTP (request latency, per-mount routes, barrier, token store, leases, audit failures, caches;
 * docs/metrics.md lists them), without a token, since the caller owns the handle.
 *
 *   format   NULL or "json": OpenBao's sys/metrics JSON, {"Timestamp": ..., "Gauges": [...],
 *            "Points": [], "Counters": [...], "Samples": [...]}, durations in milliseconds;
 *            "prometheus": the Prometheus text exposition format 0.0.4.
 *   out      receives the text, NUL-terminated, owned by the caller: release it with coffer_free().
 *   out_len  receives its length (excluding the NUL); may be NULL.
 *
 * Counts are cumulative since the handle was opened. The text holds names, numbers and mount
 * paths, never a secret value or token.
 *
 * Returns COFFER_OK; COFFER_EINVALID (NULL or closed handle, NULL out, a format other than those
 * above); COFFER_ENOMEM. On failure *out is NULL and *out_len 0. Thread-safe: it may run while
 * other threads make requests on the handle, and never makes them wait more than a few
 * instructions.
 */
int coffer_metrics(coffer_t *h, const char *format, char **out, size_t *out_len);

/* ---- Remote handles ------------------------------------------------------------------------- */

/*
 * coffer_open also accepts {"remote": {...}}: a handle on a remote cofferd (or any Vault v1 API
 * server) instead of a vault in this process, with a read cache, retries and a fallback chain
 * (docs/delivery.md). Keys ("remote." omitted; an unknown key is an error naming it):
 *
 *   address       "http://host:port" or "https://host:port" (required)
 *   ca_pem        PEM certificates to trust for https; or ca_file, a path to them (default: the
 *                 system trust store)
 *   namespace     sent as X-Vault-Namespace
 *   timeout       seconds for one HTTP exchange, connect included (default 10)
 *   auth          exactly one of {"token": "..."}; {"approle": {"role_id", "secret_id", "mount"
 *                 (default "approle")}}; {"jwt": {"role", "jwt", "mount" (default "jwt")}}. AppRole and
 *                 JWT log in at open (a store that cannot be reached is not an error: the handle
 *                 starts degraded), renew the token (auth/token/renew-self) at 2/3 of its TTL and
 *                 log in again when renewal fails or a request is refused with 403 (required)
 *   cache         {"ttl": seconds (default 300; 0 caches nothing), "max_stale": seconds an expired
 *                 entry may still answer while the store cannot be reached (default 300),
 *                 "max_bytes": the bound of the cache (default 1048576), "events": true to drop
 *                 entries on the server's kv events (sys/events/subscribe; TTL only when refused;
 *                 default true), "prefixes": {"<path prefix>": seconds} (longest prefix wins),
 *                 "environment": "<name>", "environments": {"<name>": seconds}}
 *   retry         {"attempts": 1..100 in all (default 3), "initial_backoff": seconds (0.05),
 *                 "max_backoff": seconds (2), "jitter": true (full jitter, the default)}
 *   fallback      {"env_file": path of a KEY=value file, read at open (a bad line fails coffer_open
 *                 with its line number), "environment": true (the process environment, default
 *                 true), "mapping": {"<path>": {"<field>": "<VARIABLE>"}}}. Without a mapping the
 *                 fields of secret/data/app are the variables APP_<FIELD> (docs/delivery.md).
 *
 * Durations are numbers of seconds or strings such as "250ms", "30s", "5m", "1h".
 *
 * On a remote handle coffer_request and coffer_request_ex send the call to the server (a NULL or
 * "" token: the handle's own; the status and body as the server answered; a connection failure or
 * 5xx is retried with capped exponential backoff and full jitter, then COFFER_EUNAVAILABLE;
 * opts->wrap_ttl and opts->ns are sent as X-Vault-Wrap-TTL and X-Vault-Namespace, a client_address
 * is COFFER_EINVALID);
 * coffer_kv_get reads through the cache and the fallback chain (store, then a stale cache entry,
 * the env file, the environment) with the handle's token when token is NULL or "" (with another
 * token it reads the store alone); coffer_metrics gives the client's metrics (coffer.client.*:
 * read latency, cache hits and misses, fallbacks by source, degraded). Other functions return
 * COFFER_EINVALID for a remote handle. Added in 0.1.
 */

/** Which source answered a read: see coffer_last_source(). */
#define COFFER_SOURCE_NONE 0
#define COFFER_SOURCE_STORE 1
#define COFFER_SOURCE_CACHE 2
#define COFFER_SOURCE_ENV_FILE 3
#define COFFER_SOURCE_ENVIRONMENT 4

/**
 * The source that answered the most recent successful coffer_kv_get on a remote handle (from any
 * thread): COFFER_SOURCE_STORE, _CACHE (fresh, or stale while degraded), _ENV_FILE, _ENVIRONMENT;
 * COFFER_SOURCE_NONE before the first. COFFER_SOURCE_STORE for a local handle. COFFER_EINVALID for a
 * NULL or closed handle. Thread-safe. Added in 0.1.
 */
int coffer_last_source(coffer_t *h);

/**
 * 1 while a remote handle's store cannot be reached (set when a call fails after its retries,
 * cleared when one succeeds; reads are then served by the fallback chain), else 0; 0 for a local
 * handle. COFFER_EINVALID for a NULL or closed handle. Thread-safe. Added in 0.1.
 */
int coffer_degraded(coffer_t *h);

/**
 * The handle's own events with an id above after_id, oldest first, as a JSON array of
 * {"id", "event_type", "timestamp", "data"}: "client/degraded" (data: address, reason) when the
 * store stops answering, "client/recovered" when it answers again, and each kv event the server sent
 * over the subscription ("kv-v2/data-write", ...; data: {"metadata": the event's metadata (paths,
 * versions), "dropped": cache entries dropped}). The last 256 are kept. "[]" for
 * a local handle. The text never holds a token or secret. Release *out_json with coffer_free().
 * Returns COFFER_OK; COFFER_EINVALID (NULL or closed handle, NULL out_json); COFFER_ENOMEM.
 * Thread-safe. Added in 0.1.
 */
int coffer_client_events(coffer_t *h, uint64_t after_id, char **out_json, size_t *out_len);

/* ---- Memory --------------------------------------------------------------------------------- */

/** Releases a buffer returned by the library (coffer_request's out, coffer_kv_get's data_json,
    coffer_transit_encrypt's ciphertext, coffer_transit_decrypt's plaintext, coffer_metrics's out), zeroing all of it
    first, since such buffers hold secrets, tokens and unseal keys. NULL is accepted. */
void coffer_free(void *p);

/* ---- Events (docs/events.md) ------------------------------------------------------------- */

/**
 * Called with one event: `event_json` is Vault's CloudEvents JSON for it (docs/events.md; the same
 * text `sys/events/subscribe` sends), NUL-terminated, `event_len` bytes without the NUL. It is
 * valid only during the call: copy what you keep. `ctx` is coffer_subscribe's. An event never
 * holds a secret value or a token.
 */
typedef void (*coffer_event_fn)(const char *event_json, size_t event_len, void *ctx);

/**
 * Calls `callback` with every event from now on whose type matches `event_type_glob` (`*` matches
 * any characters: "kv*", "kv-v2/data-write", "*") in the root namespace, that `token` may see:
 * `subscribe` on sys/events/subscribe/<event type> and `read` on the event's data path (a root
 * token sees all; the token is checked again for each event, so a revoked token stops receiving).
 * `*id_out` receives the subscription's id for coffer_unsubscribe (never 0).
 *
 * Thread and lifetime rules:
 * - Callbacks run on a library-owned delivery thread, never on the thread whose write published
 *   the event. A subscription's callbacks run in publication order, one at a time; different
 *   subscriptions may run at once on the library's 2 delivery threads (a callback that blocks
 *   holds up its own subscription and one of them: return promptly).
 * - Each subscription has a queue of 1024 events. When the callback falls that far behind, newer
 *   events are dropped (never blocking the writer) and counted (docs/events.md).
 * - The callback may call any coffer_* function on the handle, including coffer_unsubscribe.
 * - `ctx` must stay valid until coffer_unsubscribe (or coffer_close) has returned.
 *
 * Returns COFFER_OK; COFFER_EINVALID (NULL or closed handle, NULL callback or id_out, an empty or
 * overlong glob); COFFER_EPERM (a token that is not valid, or that lacks `subscribe` on an
 * exact event type); COFFER_ESEALED. Thread-safe.
 */
int coffer_subscribe(coffer_t *h, const char *token, const char *event_type_glob, coffer_event_fn callback,
                     void *ctx, uint64_t *id_out);

/**
 * Ends the subscription `id`: no callback of it starts afterwards, and this returns once a callback
 * of it that is running has returned, except when called from inside that very callback: then
 * the end is deferred (the running callback finishes, nothing later starts) and it returns at once,
 * without deadlock. coffer_close unsubscribes every subscription of the handle the same way.
 *
 * Returns COFFER_OK; COFFER_EINVALID (NULL or closed handle); COFFER_ENOTFOUND (no such
 * subscription, or already ended). Thread-safe.
 */
int coffer_unsubscribe(coffer_t *h, uint64_t id);

/* ---- Embedded replicas (docs/raft.md) ---------------------------------------------------- */

/*
 * coffer_open also accepts {"storage": {"type": "raft", "path": "/var/lib/app/replica",
 * "node_id": "app-1", "cluster_addr": "10.0.0.5:8201", "retry_join": ["http://vault-1:8200"]}, ...}:
 * a replica of a cofferd cluster in this process. It joins as a learner (it never votes;
 * "non_voter": false makes a voter), proves it holds the vault's keys (with the pkcs11 seal by
 * itself; with Shamir, give it the unseal keys with coffer_request "sys/unseal" as to any node),
 * receives the encrypted data, and then answers reads in process from its replica, microseconds
 * behind the cluster. A request that writes (coffer_kv_put, coffer_request PUT/POST/DELETE) is sent
 * to the cluster's active node over its API and returns that node's answer.
 */

/**
 * Waits until this replica has applied every write this process sent to the active node, so a read
 * after it sees them (read your writes); other reads need not wait. Returns at once for a vault
 * that is not a replica. Returns COFFER_OK; COFFER_EUNAVAILABLE when timeout_ms passes first;
 * COFFER_EINVALID (NULL or closed handle). Thread-safe. Added in 0.1.
 */
int coffer_replica_sync(coffer_t *h, uint32_t timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* COFFER_H */
