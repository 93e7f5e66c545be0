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
#include <openssl/bn.h>
#include <openssl/bio.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/encoder.h>
#include <openssl/decoder.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* Not OpenSSL, but this is CofferCore's one C header: glibc's sched_getcpu(3), a GNU extension its
   headers declare only under _GNU_SOURCE. It picks per-CPU shards (Meters.swift, currentCPU). */
#ifdef __linux__
extern int sched_getcpu(void);
#endif

/* Macros and variadics do not import into Swift: wrap the few we use. */
static inline void coffer_openssl_cleanse(void *ptr, size_t len) { OPENSSL_cleanse(ptr, len); }

/* Key-selection masks for the encoder and EVP_PKEY_fromdata (macros built from other macros). */
static inline int coffer_select_public(void) { return EVP_PKEY_PUBLIC_KEY; }
static inline int coffer_select_keypair(void) { return EVP_PKEY_KEYPAIR; }

/* The bytes a memory BIO holds (BIO_get_mem_data is a macro over BIO_ctrl). */
static inline long coffer_bio_mem_data(BIO *bio, char **data) { return BIO_get_mem_data(bio, data); }

/* RSA-PSS salt lengths (macros). */
static inline int coffer_rsa_pss_saltlen_max(void) { return RSA_PSS_SALTLEN_MAX; }
static inline int coffer_rsa_pss_saltlen_auto(void) { return RSA_PSS_SALTLEN_AUTO; }
static inline int coffer_rsa_pss_saltlen_digest(void) { return RSA_PSS_SALTLEN_DIGEST; }

#endif
