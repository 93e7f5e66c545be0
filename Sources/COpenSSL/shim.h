#ifndef COFFER_COPENSSL_SHIM_H
#define COFFER_COPENSSL_SHIM_H

/* The low-level SHA-256 interface is deprecated in OpenSSL 3 but remains, and it is the only one
   whose context is a plain struct: HMAC with precomputed inner and outer states copies two
   structs instead of fetching and allocating per call (see Crypto.swift, HMACKey). */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
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
