/*
 * pkifloor: the physical floor of a PKI issue, OpenSSL in C with nothing of Coffer's around it.
 *
 * The floor of an EC P-256 leaf (goal 1 of bench/bench.py's pki part), pkifloor_issue_ec():
 *   - a fresh P-256 key: EVP_PKEY_generate on one reused EVP_PKEY_CTX;
 *   - its public point and private scalar read as parameters (not through OpenSSL 3's encoders);
 *   - the TBSCertificate written as DER by hand, with what `pki/issue/<role>` puts in a leaf (as
 *     OpenBao 2.7.2 answers it, without config/urls): v3, a 20-byte random serial, ecdsa-with-SHA256,
 *     the root's subject as issuer, NotBefore now - 30 s, NotAfter now + 72 h, Subject CN=<common
 *     name>, the SubjectPublicKeyInfo, and the extensions KeyUsage critical (DigitalSignature,
 *     KeyEncipherment, KeyAgreement), EKU (serverAuth, clientAuth), SKI = SHA-1 of the public key,
 *     AKI = the root's SKI, SAN DNS:<common name>;
 *   - SHA-256 of it and one ECDSA signature by the EC P-256 root (EVP_PKEY_sign on one reused
 *     context), the Certificate DER around it;
 *   - the private key as SEC1 DER (what an `EC PRIVATE KEY` PEM holds).
 * No PEM, no JSON, no storage, no policy: those are what an engine adds to the floor.
 *
 * References measured beside it (not floors): pkifloor_issue_ec_x509api(), the same leaf through
 * OpenSSL's X509 API as most C programs write it (X509_set_pubkey, X509_add1_ext_i2d, X509_sign,
 * i2d_X509, i2d_PrivateKey: on OpenSSL 3.0 its public and private key encodings go through the
 * provider encoders, several times the floor); pkifloor_issue_rsa(), an RSA-2048 leaf the same way.
 * Goal 3's floor is pkifloor_rsa_keygen(): RSA-2048 key generation alone.
 *
 * The same file is built twice by bench/c/Makefile:
 *   .build/bench/libpkifloor.so   the functions below, which coffer-bench's `pki` mode loads with
 *                                 dlopen and times in its own process, in alternating rounds with
 *                                 the engine (bench/InProcess/PKI.swift)
 *   .build/bench/pkifloor         a program that times them alone:
 *       pkifloor [EC_ISSUES [RSA_KEYGENS]]       prints p50 / p99 / max of each
 *       pkifloor --write DIR                     writes DIR/root.pem and the leaves of each
 *                                                function (leaf.pem, leaf-x509api.pem,
 *                                                leaf-rsa.pem) and leaf-key.der (SEC1), to check
 *                                                them with openssl x509 -text and openssl verify
 */
#define _GNU_SOURCE
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static EVP_PKEY_CTX *ec_ctx, *rsa_ctx, *sign_ctx;
static EVP_MD *sha256, *sha1;
static EVP_PKEY *ca_key;
static X509 *ca_cert;
static ASN1_OCTET_STRING *ca_skid;
static unsigned char ca_name[256];
static size_t ca_name_length;
/* The last leaf and key the floor wrote (for --write and the byte count). */
static unsigned char last_cert[1024], last_key[256];
static size_t last_cert_length, last_key_length, last_der_bytes;

int pkifloor_setup(void);
int pkifloor_issue_ec(const char *common_name);
int pkifloor_issue_ec_x509api(const char *common_name);
int pkifloor_issue_rsa(const char *common_name);
int pkifloor_rsa_keygen(void);
size_t pkifloor_last_der_bytes(void);

static EVP_PKEY *keygen(EVP_PKEY_CTX *ctx) {
    EVP_PKEY *key = NULL;
    return EVP_PKEY_generate(ctx, &key) == 1 ? key : NULL;
}

/* ---- The floor: DER by hand ---------------------------------------------------------------- */

/* Writes tag, length and `n` bytes of content at `out`; returns the bytes written. */
static size_t tlv(unsigned char *out, unsigned char tag, const unsigned char *content, size_t n) {
    size_t h = 0;
    out[h++] = tag;
    if (n < 0x80) {
        out[h++] = (unsigned char)n;
    } else if (n < 0x100) {
        out[h++] = 0x81;
        out[h++] = (unsigned char)n;
    } else {
        out[h++] = 0x82;
        out[h++] = (unsigned char)(n >> 8);
        out[h++] = (unsigned char)n;
    }
    memmove(out + h, content, n);
    return h + n;
}

static size_t put(unsigned char *out, const void *bytes, size_t n) {
    memcpy(out, bytes, n);
    return n;
}

static const unsigned char ECDSA_SHA256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
static const unsigned char P256_SPKI_PREFIX[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
                                                 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                                                 0x03, 0x42, 0x00};
static const unsigned char P256_OID[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const unsigned char VERSION_3[] = {0xa0, 0x03, 0x02, 0x01, 0x02};
static const unsigned char CN_OID[] = {0x06, 0x03, 0x55, 0x04, 0x03};
/* KeyUsage critical, BIT STRING with bits 0, 2, 4 (0xa8, 3 unused bits). */
static const unsigned char KEY_USAGE[] = {0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff,
                                          0x04, 0x04, 0x03, 0x02, 0x03, 0xa8};
/* EKU serverAuth, clientAuth. */
static const unsigned char EXT_KEY_USAGE[] = {0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x04, 0x16, 0x30, 0x14,
                                              0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
                                              0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02};

/* A non-critical extension 2.5.29.<id> with the DER `value`. */
static size_t extension(unsigned char *out, unsigned char id, const unsigned char *value, size_t n) {
    unsigned char inner[300];
    size_t m = put(inner, "\x06\x03\x55\x1d", 4);
    inner[m++] = id;
    m += tlv(inner + m, 0x04, value, n);
    return tlv(out, 0x30, inner, m);
}

/* UTCTime YYMMDDHHMMSSZ. */
static size_t utc_time(unsigned char *out, time_t t) {
    struct tm tm;
    unsigned char text[13];
    gmtime_r(&t, &tm);
    int fields[6] = {tm.tm_year % 100, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
    for (int i = 0; i < 6; i++) {
        text[2 * i] = (unsigned char)('0' + fields[i] / 10);
        text[2 * i + 1] = (unsigned char)('0' + fields[i] % 10);
    }
    text[12] = 'Z';
    return tlv(out, 0x17, text, 13);
}

/* One EC P-256 leaf: keygen, TBSCertificate, SHA-256 + ECDSA, Certificate and SEC1 key DER. */
int pkifloor_issue_ec(const char *common_name) {
    size_t cn_length = strlen(common_name);
    if (cn_length > 64) return 0;
    EVP_PKEY *key = keygen(ec_ctx);
    if (!key) return 0;
    unsigned char point[65], scalar[32];
    size_t point_length = 0;
    BIGNUM *private = NULL;
    int ok = EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &point_length) == 1
        && point_length == 65 && EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &private) == 1
        && BN_bn2binpad(private, scalar, 32) == 32;
    BN_clear_free(private);
    EVP_PKEY_free(key);
    if (!ok) return 0;

    unsigned char tbs[900], body[900], a[300], b[300];
    size_t n = 0, m;
    n += put(body + n, VERSION_3, sizeof VERSION_3);
    unsigned char serial[20];
    if (RAND_bytes(serial, sizeof serial) != 1) return 0;
    serial[0] = (serial[0] & 0x7f) | 0x01; /* positive and 20 bytes long, as DER keeps it */
    n += tlv(body + n, 0x02, serial, sizeof serial);
    n += put(body + n, ECDSA_SHA256, sizeof ECDSA_SHA256);
    n += put(body + n, ca_name, ca_name_length);
    time_t now = time(NULL);
    m = utc_time(a, now - 30);
    m += utc_time(a + m, now + 72 * 3600);
    n += tlv(body + n, 0x30, a, m);
    /* Subject: SEQUENCE { SET { SEQUENCE { CN, UTF8String } } } */
    m = put(a, CN_OID, sizeof CN_OID);
    m += tlv(a + m, 0x0c, (const unsigned char *)common_name, cn_length);
    m = tlv(b, 0x30, a, m);
    m = tlv(a, 0x31, b, m);
    n += tlv(body + n, 0x30, a, m);
    n += put(body + n, P256_SPKI_PREFIX, sizeof P256_SPKI_PREFIX);
    n += put(body + n, point, 65);
    /* Extensions: KeyUsage, EKU (fixed bytes), SKI, AKI, SAN. */
    size_t e = 0;
    unsigned char extensions[400], skid[20];
    unsigned int skid_length = 0;
    e += put(extensions + e, KEY_USAGE, sizeof KEY_USAGE);
    e += put(extensions + e, EXT_KEY_USAGE, sizeof EXT_KEY_USAGE);
    if (EVP_Digest(point, 65, skid, &skid_length, sha1, NULL) != 1) return 0;
    m = tlv(a, 0x04, skid, 20); /* SubjectKeyIdentifier: OCTET STRING */
    e += extension(extensions + e, 0x0e, a, m);
    m = tlv(b, 0x80, ASN1_STRING_get0_data(ca_skid), (size_t)ASN1_STRING_length(ca_skid));
    m = tlv(a, 0x30, b, m); /* AuthorityKeyIdentifier: SEQUENCE { [0] keyIdentifier } */
    e += extension(extensions + e, 0x23, a, m);
    m = tlv(b, 0x82, (const unsigned char *)common_name, cn_length);
    m = tlv(a, 0x30, b, m); /* GeneralNames: SEQUENCE { [2] dNSName } */
    e += extension(extensions + e, 0x11, a, m);
    m = tlv(a, 0x30, extensions, e);
    n += tlv(body + n, 0xa3, a, m);
    size_t tbs_length = tlv(tbs, 0x30, body, n);

    unsigned char digest[32], signature[80];
    unsigned int digest_length = 0;
    size_t signature_length = sizeof signature - 1;
    if (EVP_Digest(tbs, tbs_length, digest, &digest_length, sha256, NULL) != 1
        || EVP_PKEY_sign(sign_ctx, signature + 1, &signature_length, digest, 32) != 1)
        return 0;
    signature[0] = 0; /* the BIT STRING's unused bits */
    n = put(body, tbs, tbs_length);
    n += put(body + n, ECDSA_SHA256, sizeof ECDSA_SHA256);
    n += tlv(body + n, 0x03, signature, signature_length + 1);
    last_cert_length = tlv(last_cert, 0x30, body, n);

    /* ECPrivateKey { 1, scalar, [0] P-256, [1] BIT STRING point } */
    n = put(body, "\x02\x01\x01", 3);
    n += tlv(body + n, 0x04, scalar, 32);
    n += tlv(body + n, 0xa0, P256_OID, sizeof P256_OID);
    a[0] = 0;
    memcpy(a + 1, point, 65);
    m = tlv(b, 0x03, a, 66);
    n += tlv(body + n, 0xa1, b, m);
    last_key_length = tlv(last_key, 0x30, body, n);
    OPENSSL_cleanse(scalar, sizeof scalar);
    OPENSSL_cleanse(body, sizeof body);
    last_der_bytes = last_cert_length + last_key_length;
    return 1;
}

/* ---- The references: OpenSSL's X509 API ------------------------------------------------------ */

/* SHA-1 of the subjectPublicKey BIT STRING's contents (RFC 5280 4.2.1.2, method 1). */
static ASN1_OCTET_STRING *key_identifier(X509 *x) {
    const unsigned char *bits;
    int length;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_length;
    ASN1_OCTET_STRING *id = ASN1_OCTET_STRING_new();
    if (!id || !X509_PUBKEY_get0_param(NULL, &bits, &length, NULL, X509_get_X509_PUBKEY(x))
        || !EVP_Digest(bits, (size_t)length, md, &md_length, EVP_sha1(), NULL) || !ASN1_OCTET_STRING_set(id, md, (int)md_length)) {
        ASN1_OCTET_STRING_free(id);
        return NULL;
    }
    return id;
}

static int set_random_serial(X509 *x) {
    unsigned char serial[20];
    if (RAND_bytes(serial, sizeof serial) != 1) return 0;
    serial[0] &= 0x7f; /* positive, as a DER INTEGER of 20 bytes must be to stay 20 bytes */
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

/* A leaf for `key`, signed by the root; NULL on failure. */
static X509 *make_leaf(EVP_PKEY *key, const char *common_name) {
    X509 *x = X509_new();
    ASN1_BIT_STRING *usage = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *extended = sk_ASN1_OBJECT_new_null();
    ASN1_OCTET_STRING *skid = NULL;
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *dns = GENERAL_NAME_new();
    ASN1_IA5STRING *dns_text = ASN1_IA5STRING_new();
    int ok = x && usage && extended && akid && names && dns && dns_text
        && X509_set_version(x, 2)
        && set_random_serial(x)
        && X509_gmtime_adj(X509_getm_notBefore(x), -30)
        && X509_gmtime_adj(X509_getm_notAfter(x), 72 * 3600)
        && X509_set_issuer_name(x, X509_get_subject_name(ca_cert))
        && X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)common_name, -1, -1, 0)
        && X509_set_pubkey(x, key)
        /* KeyUsage critical: digitalSignature (0), keyEncipherment (2), keyAgreement (4) */
        && ASN1_BIT_STRING_set_bit(usage, 0, 1) && ASN1_BIT_STRING_set_bit(usage, 2, 1) && ASN1_BIT_STRING_set_bit(usage, 4, 1)
        && X509_add1_ext_i2d(x, NID_key_usage, usage, 1, X509V3_ADD_APPEND) == 1
        && sk_ASN1_OBJECT_push(extended, OBJ_nid2obj(NID_server_auth))
        && sk_ASN1_OBJECT_push(extended, OBJ_nid2obj(NID_client_auth))
        && X509_add1_ext_i2d(x, NID_ext_key_usage, extended, 0, X509V3_ADD_APPEND) == 1
        && (skid = key_identifier(x)) != NULL
        && X509_add1_ext_i2d(x, NID_subject_key_identifier, skid, 0, X509V3_ADD_APPEND) == 1
        && (akid->keyid = ASN1_OCTET_STRING_dup(ca_skid)) != NULL
        && X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_APPEND) == 1
        && ASN1_STRING_set(dns_text, common_name, -1);
    if (ok) {
        GENERAL_NAME_set0_value(dns, GEN_DNS, dns_text);
        dns_text = NULL;
        ok = sk_GENERAL_NAME_push(names, dns) > 0;
        if (ok) dns = NULL;
    }
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_APPEND) == 1
        && X509_sign(x, ca_key, EVP_sha256()) > 0;
    ASN1_BIT_STRING_free(usage);
    sk_ASN1_OBJECT_free(extended); /* the objects are OpenSSL's static ones */
    ASN1_OCTET_STRING_free(skid);
    AUTHORITY_KEYID_free(akid);
    GENERAL_NAMES_free(names);
    GENERAL_NAME_free(dns);
    ASN1_IA5STRING_free(dns_text);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* The certificate and the private key as DER, as an issue must hand both back. */
static int encode(X509 *x, EVP_PKEY *key) {
    unsigned char *cert = NULL, *private = NULL;
    int cert_length = i2d_X509(x, &cert);
    int key_length = i2d_PrivateKey(key, &private);
    OPENSSL_free(cert);
    OPENSSL_clear_free(private, key_length > 0 ? (size_t)key_length : 0);
    if (cert_length <= 0 || key_length <= 0) return 0;
    last_der_bytes = (size_t)cert_length + (size_t)key_length;
    return 1;
}

/* Makes the keygen contexts, the EC P-256 root (self-signed, CA:TRUE, KU certSign+cRLSign, SKI,
   AKI = SKI, ten years) and its signing context. 1 on success. */
int pkifloor_setup(void) {
    if (ca_cert) return 1;
    ec_ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    rsa_ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!ec_ctx || !rsa_ctx || EVP_PKEY_keygen_init(ec_ctx) != 1 || EVP_PKEY_CTX_set_group_name(ec_ctx, "P-256") != 1
        || EVP_PKEY_keygen_init(rsa_ctx) != 1 || EVP_PKEY_CTX_set_rsa_keygen_bits(rsa_ctx, 2048) != 1)
        return 0;
    ca_key = keygen(ec_ctx);
    X509 *x = X509_new();
    BASIC_CONSTRAINTS *constraints = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *usage = ASN1_BIT_STRING_new();
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    int ok = ca_key && x && constraints && usage && akid
        && X509_set_version(x, 2) && set_random_serial(x)
        && X509_gmtime_adj(X509_getm_notBefore(x), -30)
        && X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600)
        && X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)"bench root", -1, -1, 0)
        && X509_set_issuer_name(x, X509_get_subject_name(x))
        && X509_set_pubkey(x, ca_key)
        && ASN1_BIT_STRING_set_bit(usage, 5, 1) && ASN1_BIT_STRING_set_bit(usage, 6, 1)
        && X509_add1_ext_i2d(x, NID_key_usage, usage, 1, X509V3_ADD_APPEND) == 1;
    if (ok) constraints->ca = 1;
    ok = ok && X509_add1_ext_i2d(x, NID_basic_constraints, constraints, 1, X509V3_ADD_APPEND) == 1
        && (ca_skid = key_identifier(x)) != NULL
        && X509_add1_ext_i2d(x, NID_subject_key_identifier, ca_skid, 0, X509V3_ADD_APPEND) == 1
        && (akid->keyid = ASN1_OCTET_STRING_dup(ca_skid)) != NULL
        && X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_APPEND) == 1
        && X509_sign(x, ca_key, EVP_sha256()) > 0;
    BASIC_CONSTRAINTS_free(constraints);
    ASN1_BIT_STRING_free(usage);
    AUTHORITY_KEYID_free(akid);
    if (!ok) {
        X509_free(x);
        return 0;
    }
    ca_cert = x;
    unsigned char *name = NULL;
    int name_length = i2d_X509_NAME(X509_get_subject_name(x), &name);
    if (name_length <= 0 || (size_t)name_length > sizeof ca_name) return 0;
    memcpy(ca_name, name, (size_t)name_length);
    ca_name_length = (size_t)name_length;
    OPENSSL_free(name);
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    sign_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ca_key, NULL);
    return sha256 && sha1 && sign_ctx && EVP_PKEY_sign_init(sign_ctx) == 1;
}

/* The reference: one EC P-256 leaf through the X509 API (keygen, build, X509_sign, i2d). */
int pkifloor_issue_ec_x509api(const char *common_name) {
    EVP_PKEY *key = keygen(ec_ctx);
    X509 *x = key ? make_leaf(key, common_name) : NULL;
    int ok = x && encode(x, key);
    X509_free(x);
    EVP_PKEY_free(key);
    return ok;
}

/* One RSA-2048 leaf signed by the EC root through the X509 API: keygen, build, sign, DER (a
   reference; RSA key generation dominates it). */
int pkifloor_issue_rsa(const char *common_name) {
    EVP_PKEY *key = keygen(rsa_ctx);
    X509 *x = key ? make_leaf(key, common_name) : NULL;
    int ok = x && encode(x, key);
    X509_free(x);
    EVP_PKEY_free(key);
    return ok;
}

/* RSA-2048 key generation alone (goal 3's floor). */
int pkifloor_rsa_keygen(void) {
    EVP_PKEY *key = keygen(rsa_ctx);
    EVP_PKEY_free(key);
    return key != NULL;
}

/* Bytes of DER (certificate + private key) the last issue produced. */
size_t pkifloor_last_der_bytes(void) { return last_der_bytes; }

#ifndef PKIFLOOR_LIBRARY

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int issue_ec(void) { return pkifloor_issue_ec("leaf.example.com"); }
static int issue_ec_x509api(void) { return pkifloor_issue_ec_x509api("leaf.example.com"); }
static int issue_rsa(void) { return pkifloor_issue_rsa("leaf.example.com"); }

static void measure(const char *name, int n, int (*fn)(void)) {
    uint64_t *samples = malloc(sizeof(uint64_t) * (size_t)n);
    for (int i = 0; i < (n / 10 < 5 ? 5 : n / 10); i++) fn();
    for (int i = 0; i < n; i++) {
        uint64_t start = now_ns();
        if (!fn()) {
            fprintf(stderr, "pkifloor: %s failed\n", name);
            exit(1);
        }
        samples[i] = now_ns() - start;
    }
    qsort(samples, (size_t)n, sizeof(uint64_t), compare_u64);
    printf("  %-52s n %6d  p50 %10.1f µs  p99 %10.1f µs  max %10.1f µs\n", name, n, samples[n / 2] / 1000.0,
           samples[(int)(n * 0.99)] / 1000.0, samples[n - 1] / 1000.0);
    free(samples);
}

static int write_file(const char *directory, const char *name, const unsigned char *bytes, size_t n, X509 *x) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", directory, name);
    FILE *f = fopen(path, "w");
    int ok = f && (x ? PEM_write_X509(f, x) == 1 : fwrite(bytes, 1, n, f) == n);
    if (f) ok = fclose(f) == 0 && ok;
    return ok;
}

int main(int argc, char **argv) {
    if (!pkifloor_setup()) {
        fprintf(stderr, "pkifloor: setup failed\n");
        return 1;
    }
    if (argc == 3 && strcmp(argv[1], "--write") == 0) {
        EVP_PKEY *ec = keygen(ec_ctx), *rsa = keygen(rsa_ctx);
        X509 *leaf_x509api = make_leaf(ec, "leaf.example.com"), *leaf_rsa = make_leaf(rsa, "leaf.example.com");
        int ok = pkifloor_issue_ec("leaf.example.com");
        const unsigned char *cursor = last_cert;
        X509 *leaf = ok ? d2i_X509(NULL, &cursor, (long)last_cert_length) : NULL;
        if (!leaf || cursor != last_cert + last_cert_length || !leaf_x509api || !leaf_rsa
            || !write_file(argv[2], "root.pem", NULL, 0, ca_cert) || !write_file(argv[2], "leaf.pem", NULL, 0, leaf)
            || !write_file(argv[2], "leaf-key.der", last_key, last_key_length, NULL)
            || !write_file(argv[2], "leaf-x509api.pem", NULL, 0, leaf_x509api)
            || !write_file(argv[2], "leaf-rsa.pem", NULL, 0, leaf_rsa)) {
            fprintf(stderr, "pkifloor: writing the sample certificates failed\n");
            return 1;
        }
        return 0;
    }
    int ec_issues = argc > 1 ? atoi(argv[1]) : 5000;
    int rsa_keygens = argc > 2 ? atoi(argv[2]) : 100;
    if (ec_issues < 1 || rsa_keygens < 1) {
        fprintf(stderr, "usage: pkifloor [EC_ISSUES [RSA_KEYGENS]] | pkifloor --write DIR\n");
        return 2;
    }
    measure("floor: EC P-256 keygen + leaf + sign + DER", ec_issues, issue_ec);
    printf("    (%zu bytes of DER: certificate + private key)\n", pkifloor_last_der_bytes());
    measure("reference: the same through the X509 API", ec_issues, issue_ec_x509api);
    measure("floor: RSA-2048 keygen", rsa_keygens, pkifloor_rsa_keygen);
    measure("reference: RSA-2048 leaf through the X509 API", rsa_keygens, issue_rsa);
    return 0;
}

#endif
