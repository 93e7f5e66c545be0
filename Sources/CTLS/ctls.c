#include "ctls.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct ctls_conn {
    SSL_CTX *ctx;
    SSL *ssl;
    /* Why the last read failed, for ctls_read_error ("" when it did not fail in TLS). */
    char read_error[128];
};

/* libssl writes to the socket with write(2), which raises SIGPIPE when the peer has gone. cofferd
   ignores SIGPIPE, but a program embedding libcoffer may not: around every libssl call that can
   write, SIGPIPE is blocked for this thread and a SIGPIPE it raised is consumed before the mask is
   restored (errno is kept for the caller). */
typedef struct {
    sigset_t old;
    int was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g) {
    sigset_t pending, block;
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &g->old);
}

static void sigpipe_restore(sigpipe_guard *g) {
    int saved = errno;
    if (!g->was_pending) {
        sigset_t pending;
        sigemptyset(&pending);
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE) == 1) {
            sigset_t only;
            sigemptyset(&only);
            sigaddset(&only, SIGPIPE);
            struct timespec zero = {0, 0};
            while (sigtimedwait(&only, NULL, &zero) == -1 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    errno = saved;
}

static void set_err(char *err, size_t err_len, const char *prefix) {
    if (err == NULL || err_len == 0) return;
    unsigned long code = ERR_get_error();
    if (code != 0) {
        char detail[256];
        ERR_error_string_n(code, detail, sizeof detail);
        snprintf(err, err_len, "%s: %s", prefix, detail);
    } else {
        snprintf(err, err_len, "%s", prefix);
    }
    ERR_clear_error();
}

static int is_ip_literal(const char *host) {
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
    if (ip == NULL) return 0;
    ASN1_OCTET_STRING_free(ip);
    return 1;
}

static int load_ca(SSL_CTX *ctx, const char *ca_pem, size_t ca_len) {
    BIO *bio = BIO_new_mem_buf(ca_pem, (int)ca_len);
    if (bio == NULL) return 0;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int count = 0;
    for (;;) {
        X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (cert == NULL) break;
        if (X509_STORE_add_cert(store, cert) == 1) count++;
        X509_free(cert);
    }
    ERR_clear_error();
    BIO_free(bio);
    return count;
}

/* The connection of a completed handshake; frees both on failure. */
static ctls_conn *wrap(SSL_CTX *ctx, SSL *ssl, char *err, size_t err_len) {
    ctls_conn *conn = OPENSSL_zalloc(sizeof *conn);
    if (conn == NULL) {
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    conn->ctx = ctx;
    conn->ssl = ssl;
    return conn;
}

ctls_conn *ctls_connect(int fd, const char *host, const char *ca_pem, size_t ca_len, char *err, size_t err_len) {
    return ctls_connect_ex(fd, host, ca_pem, ca_len, NULL, err, err_len);
}

static int load_client_cert(SSL_CTX *ctx, const ctls_options *o) {
    if (o->cert_len > (size_t)0x7fffffff || o->key_len > (size_t)0x7fffffff) return 0;
    BIO *cb = BIO_new_mem_buf(o->cert_pem, (int)o->cert_len);
    BIO *kb = BIO_new_mem_buf(o->key_pem, (int)o->key_len);
    X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    int ok = cert != NULL && key != NULL && SSL_CTX_use_certificate(ctx, cert) == 1 &&
             SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    return ok;
}

ctls_conn *ctls_connect_ex(int fd, const char *host, const char *ca_pem, size_t ca_len, const ctls_options *options,
                           char *err, size_t err_len) {
    static const ctls_options defaults = {0};
    const ctls_options *o = options != NULL ? options : &defaults;
    if (err != NULL && err_len > 0) err[0] = 0;
    if (ca_len > (size_t)0x7fffffff) {
        snprintf(err, err_len, "the CA PEM is too large");
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        set_err(err, err_len, "cannot create a TLS context");
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, o->min_version != 0 ? o->min_version : TLS1_2_VERSION) != 1 ||
        (o->max_version != 0 && SSL_CTX_set_max_proto_version(ctx, o->max_version) != 1)) {
        set_err(err, err_len, "unsupported TLS version bounds");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, o->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (o->cert_pem != NULL && o->cert_len > 0 && !load_client_cert(ctx, o)) {
        ERR_clear_error();
        snprintf(err, err_len, "cannot load the client certificate and key");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (o->insecure) {
        /* Nothing to load: the peer is not checked. */
    } else if (ca_pem != NULL && ca_len > 0) {
        if (load_ca(ctx, ca_pem, ca_len) == 0) {
            SSL_CTX_free(ctx);
            snprintf(err, err_len, "no certificates in the CA PEM");
            return NULL;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        set_err(err, err_len, "cannot load the system trust store");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) {
        set_err(err, err_len, "cannot create a TLS connection");
        SSL_CTX_free(ctx);
        return NULL;
    }
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    int ok;
    if (o->skip_name_check) {
        ok = 1;
    } else if (o->insecure) {
        ok = is_ip_literal(host) ? 1 : SSL_set_tlsext_host_name(ssl, host);
    } else if (is_ip_literal(host)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, host);
    } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set1_host(ssl, host) == 1 && SSL_set_tlsext_host_name(ssl, host) == 1;
    }
    if (ok != 1 || SSL_set_fd(ssl, fd) != 1) {
        set_err(err, err_len, "cannot set up the TLS connection");
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        return NULL;
    }
    sigpipe_guard guard;
    sigpipe_block(&guard);
    int rc = SSL_connect(ssl);
    sigpipe_restore(&guard);
    if (rc != 1) {
        long verify = SSL_get_verify_result(ssl);
        int code = SSL_get_error(ssl, rc);
        if (verify != X509_V_OK) {
            snprintf(err, err_len, "certificate verify failed: %s", X509_verify_cert_error_string(verify));
            ERR_clear_error();
        } else if (code == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            snprintf(err, err_len, "TLS handshake timed out");
            ERR_clear_error();
        } else if (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            snprintf(err, err_len, "TLS handshake failed: the connection was closed");
        } else {
            set_err(err, err_len, "TLS handshake failed");
        }
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return wrap(ctx, ssl, err, err_len);
}

ctls_conn *ctls_accept(int fd, const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
                       const char *ca_pem, size_t ca_len, char *err, size_t err_len) {
    if (err != NULL && err_len > 0) err[0] = 0;
    if (ca_pem == NULL || ca_len == 0 || ca_len > (size_t)0x7fffffff) {
        snprintf(err, err_len, "mutual TLS needs the CA PEM");
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        set_err(err, err_len, "cannot create a TLS context");
        return NULL;
    }
    ctls_options keys = {0};
    keys.cert_pem = cert_pem;
    keys.cert_len = cert_len;
    keys.key_pem = key_pem;
    keys.key_len = key_len;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 || cert_pem == NULL || key_pem == NULL ||
        !load_client_cert(ctx, &keys)) {
        ERR_clear_error();
        snprintf(err, err_len, "cannot load the node certificate and key");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (load_ca(ctx, ca_pem, ca_len) == 0) {
        snprintf(err, err_len, "no certificates in the CA PEM");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    /* No session tickets: every connection has a context of its own, so none could be resumed, and the
       client side then receives nothing after the handshake, so anything it can read means the
       connection has ended (TCPTransport checks that before it writes). */
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        set_err(err, err_len, "cannot set up the TLS connection");
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        return NULL;
    }
    sigpipe_guard guard;
    sigpipe_block(&guard);
    int rc = SSL_accept(ssl);
    sigpipe_restore(&guard);
    if (rc != 1) {
        long verify = SSL_get_verify_result(ssl);
        if (verify != X509_V_OK) {
            snprintf(err, err_len, "client certificate verify failed: %s", X509_verify_cert_error_string(verify));
            ERR_clear_error();
        } else {
            set_err(err, err_len, "TLS handshake failed");
        }
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return wrap(ctx, ssl, err, err_len);
}

long ctls_read(ctls_conn *conn, void *buf, size_t len) {
    size_t got = 0;
    if (len > 0x7fffffff) len = 0x7fffffff;
    sigpipe_guard guard;
    sigpipe_block(&guard);
    int rc = SSL_read_ex(conn->ssl, buf, len, &got);
    sigpipe_restore(&guard);
    if (rc == 1) return (long)got;
    int code = SSL_get_error(conn->ssl, rc);
    if (code == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return 0;
    }
    /* A peer that closes without close_notify: treated as the end of the stream (the HTTP layer
       checks the body's length). */
    if (code == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return 0;
    }
    conn->read_error[0] = 0;
    if (code == SSL_ERROR_SSL) {
        const char *reason = ERR_reason_error_string(ERR_peek_error());
        if (reason != NULL) snprintf(conn->read_error, sizeof conn->read_error, "%s", reason);
    }
    ERR_clear_error();
    return -1;
}

const char *ctls_read_error(const ctls_conn *conn) { return conn->read_error; }

int ctls_write(ctls_conn *conn, const void *buf, size_t len) {
    const unsigned char *p = buf;
    sigpipe_guard guard;
    sigpipe_block(&guard);
    while (len > 0) {
        size_t done = 0;
        if (SSL_write_ex(conn->ssl, p, len, &done) != 1) {
            ERR_clear_error();
            sigpipe_restore(&guard);
            return -1;
        }
        p += done;
        len -= done;
    }
    sigpipe_restore(&guard);
    return 0;
}

void ctls_free(ctls_conn *conn) {
    if (conn == NULL) return;
    SSL_free(conn->ssl);
    SSL_CTX_free(conn->ctx);
    OPENSSL_free(conn);
}
