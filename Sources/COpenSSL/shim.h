#ifndef COFFER_COPENSSL_SHIM_H
#define COFFER_COPENSSL_SHIM_H

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

/* Macros and variadics do not import into Swift: wrap the few we use. */
static inline void coffer_openssl_cleanse(void *ptr, size_t len) { OPENSSL_cleanse(ptr, len); }

#endif
