#ifndef COFFER_CPKI_H
#define COFFER_CPKI_H

/* Reading X.509 certificates and PKCS#10 requests with OpenSSL, for the PKI engine.

   The engine writes certificates, requests and CRLs itself (Sources/Engines/PKI/DER.swift: the
   encoding is a few fixed shapes); reading what users hand in (a CSR, a signed intermediate, a
   certificate to revoke) goes through OpenSSL, which has parsed hostile X.509 for decades. Each
   call fills a plain struct, so the Swift side never walks OpenSSL's stacks and unions. */

#include <stddef.h>
#include <stdint.h>

typedef struct cpki_parsed {
    /* The serial number's magnitude, big-endian (certificates only). */
    unsigned char serial[64];
    size_t serial_len;
    /* Validity, in seconds since 1970 (certificates only). */
    int64_t not_before;
    int64_t not_after;
    /* Basic constraints say CA:TRUE (certificates only); path_len is -1 without a limit. */
    int is_ca;
    long path_len;
    /* DER of the subject Name, of the issuer Name (certificates), of the SubjectPublicKeyInfo. */
    unsigned char *subject_der;
    size_t subject_len;
    unsigned char *issuer_der;
    size_t issuer_len;
    unsigned char *spki_der;
    size_t spki_len;
    /* Subject and authority key identifiers, when present. */
    unsigned char ski[64];
    size_t ski_len;
    unsigned char aki[64];
    size_t aki_len;
    /* The subject's first common name (UTF-8), or NULL. */
    char *common_name;
    /* Subject alternative names, one per line: "DNS:<name>", "EMAIL:<addr>", "URI:<uri>",
       "IP:<hex of the 4 or 16 address bytes>". Other kinds are skipped. NULL when none. */
    char *sans;
    /* The public key: "EC", "RSA", "ED25519" or "" (another kind), and its size in bits. */
    char key_type[16];
    int key_bits;
} cpki_parsed;

/* 0: parsed; -1: not a certificate (or trailing bytes). */
int cpki_parse_certificate(const unsigned char *der, size_t len, cpki_parsed *out);

/* 0: parsed and its self-signature verifies; -1: not a certificate request; -2: the signature
   does not verify. */
int cpki_parse_request(const unsigned char *der, size_t len, cpki_parsed *out);

/* 1: `certificate` (DER) carries a valid signature by the key of `issuer` (DER); 0: it does not, or
   either does not parse. */
int cpki_signed_by(const unsigned char *certificate, size_t certificate_len, const unsigned char *issuer,
                   size_t issuer_len);

/* Frees what a parse allocated (safe on a zeroed or partly filled struct). */
void cpki_parsed_free(cpki_parsed *parsed);

#endif
