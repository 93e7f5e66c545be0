#include "cpki.h"

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int copy_der_name(const X509_NAME *name, unsigned char **out, size_t *len) {
    unsigned char *buffer = NULL;
    int n = i2d_X509_NAME(name, &buffer);
    if (n <= 0) return -1;
    *out = buffer;
    *len = (size_t)n;
    return 0;
}

/* The SubjectPublicKeyInfo as it was parsed (i2d_X509_PUBKEY re-encodes the ASN.1 structure; i2d_PUBKEY
   on the EVP_PKEY would set up an OpenSSL 3 encoder, hundreds of microseconds). */
static int copy_public_key(X509_PUBKEY *spki, EVP_PKEY *key, cpki_parsed *out) {
    if (key == NULL || spki == NULL) return -1;
    unsigned char *buffer = NULL;
    int n = i2d_X509_PUBKEY(spki, &buffer);
    if (n <= 0) return -1;
    out->spki_der = buffer;
    out->spki_len = (size_t)n;
    const char *type = "";
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC: type = "EC"; break;
    case EVP_PKEY_RSA: type = "RSA"; break;
    case EVP_PKEY_ED25519: type = "ED25519"; break;
    default: break;
    }
    strncpy(out->key_type, type, sizeof out->key_type - 1);
    out->key_bits = EVP_PKEY_get_bits(key);
    return 0;
}

static void copy_common_name(const X509_NAME *name, cpki_parsed *out) {
    int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (index < 0) return;
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n < 0) return;
    out->common_name = malloc((size_t)n + 1);
    if (out->common_name) {
        memcpy(out->common_name, utf8, (size_t)n);
        out->common_name[n] = 0;
    }
    OPENSSL_free(utf8);
}

/* Appends "<prefix><bytes>\n" to the growing SAN text. */
static int append(char **text, size_t *used, const char *prefix, const char *bytes, size_t len) {
    size_t need = *used + strlen(prefix) + len + 2;
    char *grown = realloc(*text, need);
    if (!grown) return -1;
    *text = grown;
    memcpy(grown + *used, prefix, strlen(prefix));
    *used += strlen(prefix);
    memcpy(grown + *used, bytes, len);
    *used += len;
    grown[(*used)++] = '\n';
    grown[*used] = 0;
    return 0;
}

static void copy_names(const GENERAL_NAMES *names, cpki_parsed *out) {
    if (names == NULL) return;
    char *text = NULL;
    size_t used = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        int type = 0;
        const ASN1_STRING *value = GENERAL_NAME_get0_value(name, &type);
        if (value == NULL) continue;
        const char *bytes = (const char *)ASN1_STRING_get0_data(value);
        size_t len = (size_t)ASN1_STRING_length(value);
        /* A name holding a NUL byte is not a name: skip it rather than let it be cut short. */
        if (type != GEN_IPADD && memchr(bytes, 0, len) != NULL) continue;
        if (memchr(bytes, '\n', len) != NULL && type != GEN_IPADD) continue;
        int failed = 0;
        switch (type) {
        case GEN_DNS: failed = append(&text, &used, "DNS:", bytes, len); break;
        case GEN_EMAIL: failed = append(&text, &used, "EMAIL:", bytes, len); break;
        case GEN_URI: failed = append(&text, &used, "URI:", bytes, len); break;
        case GEN_IPADD: {
            if (len != 4 && len != 16) break;
            char hex[33];
            for (size_t j = 0; j < len; j++) {
                static const char digits[] = "0123456789abcdef";
                hex[2 * j] = digits[((const unsigned char *)bytes)[j] >> 4];
                hex[2 * j + 1] = digits[((const unsigned char *)bytes)[j] & 15];
            }
            failed = append(&text, &used, "IP:", hex, 2 * len);
            break;
        }
        default: break;
        }
        if (failed) break;
    }
    out->sans = text;
}

static int64_t seconds(const ASN1_TIME *time) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (time == NULL || ASN1_TIME_to_tm(time, &tm) != 1) return 0;
    return (int64_t)timegm(&tm);
}

int cpki_parse_certificate(const unsigned char *der, size_t len, cpki_parsed *out) {
    memset(out, 0, sizeof *out);
    out->path_len = -1;
    const unsigned char *cursor = der;
    X509 *cert = d2i_X509(NULL, &cursor, (long)len);
    if (cert == NULL || cursor != der + len) {
        X509_free(cert);
        ERR_clear_error();
        return -1;
    }
    int result = -1;
    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (serial == NULL || BN_num_bytes(serial) > (int)sizeof out->serial) goto done;
    out->serial_len = (size_t)BN_bn2bin(serial, out->serial);
    out->not_before = seconds(X509_get0_notBefore(cert));
    out->not_after = seconds(X509_get0_notAfter(cert));
    /* Computes and caches the extension flags; 0 when an extension is malformed. */
    uint32_t flags = X509_get_extension_flags(cert);
    if (flags & EXFLAG_INVALID) goto done;
    out->is_ca = (flags & EXFLAG_CA) != 0;
    out->path_len = X509_get_pathlen(cert);
    if (copy_der_name(X509_get_subject_name(cert), &out->subject_der, &out->subject_len) != 0) goto done;
    if (copy_der_name(X509_get_issuer_name(cert), &out->issuer_der, &out->issuer_len) != 0) goto done;
    if (copy_public_key(X509_get_X509_PUBKEY(cert), X509_get0_pubkey(cert), out) != 0) goto done;
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(cert);
    if (ski && ASN1_STRING_length(ski) <= (int)sizeof out->ski) {
        out->ski_len = (size_t)ASN1_STRING_length(ski);
        memcpy(out->ski, ASN1_STRING_get0_data(ski), out->ski_len);
    }
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(cert);
    if (aki && ASN1_STRING_length(aki) <= (int)sizeof out->aki) {
        out->aki_len = (size_t)ASN1_STRING_length(aki);
        memcpy(out->aki, ASN1_STRING_get0_data(aki), out->aki_len);
    }
    copy_common_name(X509_get_subject_name(cert), out);
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    copy_names(names, out);
    GENERAL_NAMES_free(names);
    result = 0;
done:
    BN_free(serial);
    X509_free(cert);
    ERR_clear_error();
    if (result != 0) cpki_parsed_free(out);
    return result;
}

int cpki_parse_request(const unsigned char *der, size_t len, cpki_parsed *out) {
    memset(out, 0, sizeof *out);
    out->path_len = -1;
    const unsigned char *cursor = der;
    X509_REQ *request = d2i_X509_REQ(NULL, &cursor, (long)len);
    if (request == NULL || cursor != der + len) {
        X509_REQ_free(request);
        ERR_clear_error();
        return -1;
    }
    int result = -1;
    EVP_PKEY *key = X509_REQ_get0_pubkey(request);
    if (key == NULL) goto done;
    if (X509_REQ_verify(request, key) != 1) {
        result = -2;
        goto done;
    }
    if (copy_der_name(X509_REQ_get_subject_name(request), &out->subject_der, &out->subject_len) != 0) goto done;
    if (copy_public_key(X509_REQ_get_X509_PUBKEY(request), key, out) != 0) goto done;
    copy_common_name(X509_REQ_get_subject_name(request), out);
    STACK_OF(X509_EXTENSION) *extensions = X509_REQ_get_extensions(request);
    if (extensions) {
        int index = X509v3_get_ext_by_NID(extensions, NID_subject_alt_name, -1);
        if (index >= 0) {
            GENERAL_NAMES *names = X509V3_EXT_d2i(X509v3_get_ext(extensions, index));
            copy_names(names, out);
            GENERAL_NAMES_free(names);
        }
        sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
    }
    result = 0;
done:
    X509_REQ_free(request);
    ERR_clear_error();
    if (result != 0) cpki_parsed_free(out);
    return result;
}

int cpki_signed_by(const unsigned char *certificate, size_t certificate_len, const unsigned char *issuer,
                   size_t issuer_len) {
    const unsigned char *cursor = certificate;
    X509 *cert = d2i_X509(NULL, &cursor, (long)certificate_len);
    cursor = issuer;
    X509 *ca = d2i_X509(NULL, &cursor, (long)issuer_len);
    int ok = 0;
    if (cert != NULL && ca != NULL) {
        EVP_PKEY *key = X509_get0_pubkey(ca);
        ok = key != NULL && X509_verify(cert, key) == 1;
    }
    X509_free(cert);
    X509_free(ca);
    ERR_clear_error();
    return ok;
}

void cpki_parsed_free(cpki_parsed *parsed) {
    OPENSSL_free(parsed->subject_der);
    OPENSSL_free(parsed->issuer_der);
    OPENSSL_free(parsed->spki_der);
    free(parsed->common_name);
    free(parsed->sans);
    parsed->subject_der = parsed->issuer_der = parsed->spki_der = NULL;
    parsed->common_name = parsed->sans = NULL;
}
