/* An example of the C ABI: open a SQLite-backed Coffer, initialise it, unseal it, write a secret
 * and read it back. Build it with pkg-config:
 *
 *   cc -std=c99 example.c $(pkg-config --cflags --libs coffer) -o example && ./example /tmp/coffer-example
 *
 * It needs an empty (or new) directory. JSON is picked apart with strstr/sscanf to keep the
 * example free of dependencies; a real program would use a JSON library.
 */
#include <coffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints the failure of a coffer_* call and exits. */
static void check(int status, const char *what) {
    if (status != COFFER_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, coffer_errmsg(), coffer_strerror(status));
        exit(1);
    }
}

int main(int argc, char **argv) {
    char config[1024], key[80], token[128], body[160];
    char *out = NULL, *data = NULL;
    int http = 0;
    int64_t version = 0;
    coffer_t *db = NULL;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
        return 2;
    }
    printf("libcoffer %s (ABI %d)\n", coffer_version(), coffer_abi_version());
    snprintf(config, sizeof config, "{\"storage\": {\"type\": \"sqlite\", \"path\": \"%s/coffer.db\"}}", argv[1]);
    check(coffer_open(config, &db), "open");

    /* sys/init returns {"keys":["<hex>"],"keys_base64":[...],"root_token":"<token>"}, once. */
    strcpy(body, "{\"secret_shares\": 1, \"secret_threshold\": 1}");
    check(coffer_request(db, "PUT", "sys/init", NULL, body, strlen(body), &http, &out, NULL), "init");
    if (sscanf(strstr(out, "\"keys\":[\"") + 9, "%79[0-9a-f]", key) != 1 ||
        sscanf(strstr(out, "\"root_token\":\"") + 14, "%127[^\"]", token) != 1) {
        fprintf(stderr, "unexpected sys/init answer\n");
        return 1;
    }
    coffer_free(out);
    printf("initialised (HTTP %d)\n", http);

    /* Like Vault, initialising leaves it sealed: unseal it with the key, as after every start. */
    snprintf(body, sizeof body, "{\"key\": \"%s\"}", key);
    check(coffer_request(db, "PUT", "sys/unseal", NULL, body, strlen(body), &http, &out, NULL), "unseal");
    printf("unsealed: %s\n", strstr(out, "\"sealed\":false") ? "yes" : "no");
    coffer_free(out);

    /* Mount KV v2 at secret/, then the fast paths. */
    strcpy(body, "{\"type\": \"kv\", \"options\": {\"version\": \"2\"}}");
    check(coffer_request(db, "POST", "sys/mounts/secret", token, body, strlen(body), &http, &out, NULL), "mount");
    coffer_free(out);
    strcpy(body, "{\"password\": \"s3cret\"}");
    check(coffer_kv_put(db, "secret", "app/db", token, body, strlen(body), COFFER_KV_NO_CAS, &version), "put");
    printf("wrote secret/app/db version %lld\n", (long long)version);
    check(coffer_kv_get(db, "secret", "app/db", token, 0, &data, NULL, &version), "get");
    printf("read secret/app/db version %lld: %s\n", (long long)version, data);
    coffer_free(data);

    coffer_close(db);
    return 0;
}
