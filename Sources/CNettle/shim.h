#ifndef COFFER_CNETTLE_SHIM_H
#define COFFER_CNETTLE_SHIM_H

/* Nettle's AES-256-GCM for the hot paths with a long-lived key (Crypto.swift, AESGCMKey: the barrier's
   decryption and transit's aes256-gcm96 keys). Nettle keeps the key schedule and the GHASH table in
   plain structs that threads can share read-only, and a seal or an open is four direct calls; OpenSSL
   3.0's EVP interface spends three times the cipher's own work on parameter passing for a value of
   100 bytes (docs/benchmarks.md). */
#include <nettle/aes.h>
#include <nettle/gcm.h>
#include <nettle/memops.h>
#include <string.h>

/* The expanded key: AES-256 round keys and the GHASH table derived from them. */
struct coffer_gcm_key {
    struct aes256_ctx cipher;
    struct gcm_key hash;
};

static inline void coffer_gcm_key_set(struct coffer_gcm_key *key, const uint8_t *raw) {
    aes256_set_encrypt_key(&key->cipher, raw);
    gcm_set_key(&key->hash, &key->cipher, (nettle_cipher_func *)aes256_encrypt);
}

/* Decrypts `length` bytes of ciphertext at `src` into `dst` and checks the 16-byte `tag` in constant
   time. Returns 1 when the tag matches; otherwise 0, with `dst` zeroed. The per-message state stays
   on the stack and is cleared. */
static inline int coffer_gcm_aes256_open(const struct coffer_gcm_key *key, const uint8_t *iv, size_t aad_length,
                                         const uint8_t *aad, size_t length, uint8_t *dst, const uint8_t *src,
                                         const uint8_t *tag) {
    struct gcm_ctx ctx;
    uint8_t digest[GCM_DIGEST_SIZE];
    gcm_set_iv(&ctx, &key->hash, GCM_IV_SIZE, iv);
    if (aad_length > 0) gcm_update(&ctx, &key->hash, aad_length, aad);
    if (length > 0) gcm_decrypt(&ctx, &key->hash, &key->cipher, (nettle_cipher_func *)aes256_encrypt, length, dst, src);
    gcm_digest(&ctx, &key->hash, &key->cipher, (nettle_cipher_func *)aes256_encrypt, GCM_DIGEST_SIZE, digest);
    int ok = memeql_sec(digest, tag, GCM_DIGEST_SIZE);
    if (!ok && length > 0) explicit_bzero(dst, length);
    explicit_bzero(&ctx, sizeof ctx);
    explicit_bzero(digest, sizeof digest);
    return ok;
}

/* Encrypts `length` bytes at `src` into `dst` and writes the 16-byte `tag`. The per-message state stays
   on the stack and is cleared. */
static inline void coffer_gcm_aes256_seal(const struct coffer_gcm_key *key, const uint8_t *iv, size_t aad_length,
                                          const uint8_t *aad, size_t length, uint8_t *dst, const uint8_t *src,
                                          uint8_t *tag) {
    struct gcm_ctx ctx;
    gcm_set_iv(&ctx, &key->hash, GCM_IV_SIZE, iv);
    if (aad_length > 0) gcm_update(&ctx, &key->hash, aad_length, aad);
    if (length > 0) gcm_encrypt(&ctx, &key->hash, &key->cipher, (nettle_cipher_func *)aes256_encrypt, length, dst, src);
    gcm_digest(&ctx, &key->hash, &key->cipher, (nettle_cipher_func *)aes256_encrypt, GCM_DIGEST_SIZE, tag);
    explicit_bzero(&ctx, sizeof ctx);
}

#endif
