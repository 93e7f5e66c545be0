#ifndef COFFER_CTLS_H
#define COFFER_CTLS_H

/* A TLS client over a connected socket, for the HTTP client the auth methods use (JWKS, OIDC
   discovery and token endpoints, the Kubernetes TokenReview), and mutual TLS between Raft peers. OpenSSL's libssl does the work; the
   header exposes only opaque handles and plain values, so Swift never sees OpenSSL's types and the
   module does not clash with COpenSSL.

   The socket stays the caller's: it is connected (and given its read and write timeouts) before
   ctls_connect and closed by the caller after ctls_free. A connection is used by one thread at a
   time. */

#include <stddef.h>

typedef struct ctls_conn ctls_conn;

/* Performs the TLS handshake on the connected socket `fd` and verifies the server's certificate
   chain and name. `host` is the name from the URL: a DNS name (sent as SNI, matched against the
   certificate's DNS names) or an IP address literal (matched against its IP addresses).
   `ca_pem`/`ca_len`: the PEM certificates to trust; NULL or 0 for the system trust store.
   Returns the connection, or NULL with a message in `err` (NUL-terminated, at most `err_len`
   bytes): "certificate verify failed: self-signed certificate", "no certificates in the CA PEM"... */
ctls_conn *ctls_connect(int fd, const char *host, const char *ca_pem, size_t ca_len, char *err, size_t err_len);

/* Options for ctls_connect_ex. Zero-initialised means: verify the peer, TLS 1.2 at least, the
   highest version OpenSSL offers at most, no client certificate. */
typedef struct ctls_options {
    /* Nonzero: skip the chain and name check (Vault's insecure_tls; for tests and lab set-ups). */
    int insecure;
    /* 0x0301 (TLS 1.0) to 0x0304 (TLS 1.3); 0 for the defaults above. */
    int min_version;
    int max_version;
    /* A client certificate and its private key in PEM; NULL or 0 for none. Both or neither. */
    const char *cert_pem;
    size_t cert_len;
    const char *key_pem;
    size_t key_len;
    /* Nonzero: verify the peer's chain against the CA but not its name (Raft peers are addressed by
       IP and port and are identified by their cluster CA). */
    int skip_name_check;
} ctls_options;

/* ctls_connect with options (the LDAP client: insecure_tls, tls_min_version/tls_max_version, a
   client certificate). `options` may be NULL for the defaults. */
ctls_conn *ctls_connect_ex(int fd, const char *host, const char *ca_pem, size_t ca_len, const ctls_options *options,
                           char *err, size_t err_len);

/* The server side of mutual TLS on an accepted socket (the Raft transport): presents `cert_pem` with
   `key_pem`, and requires a client certificate that chains to `ca_pem`. TLS 1.2 at least; no session
   tickets, so the client reads nothing after the handshake that the server does not write. Returns the
   connection, or NULL with a message in `err`. */
ctls_conn *ctls_accept(int fd, const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
                       const char *ca_pem, size_t ca_len, char *err, size_t err_len);

/* Reads up to `len` bytes: the count read, 0 at a clean end of the stream (close_notify or the
   peer closing), -1 on error or timeout (errno is EAGAIN/EWOULDBLOCK after a socket timeout). */
long ctls_read(ctls_conn *conn, void *buf, size_t len);

/* After ctls_read returned -1: libssl's reason when the failure was in TLS ("tlsv13 alert certificate
   required": a server that wanted a client certificate says so only after the handshake), else "". */
const char *ctls_read_error(const ctls_conn *conn);

/* Writes all `len` bytes: 0 when done, -1 on error or timeout. */
int ctls_write(ctls_conn *conn, const void *buf, size_t len);

/* Frees the connection (without closing the socket). NULL is ignored. */
void ctls_free(ctls_conn *conn);

#endif
