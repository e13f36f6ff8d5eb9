// The TLS engine's C: OpenSSL 3's headers (Debian's libssl-dev), plus small functions for what
// Swift cannot call directly: macros (SSL_CTX_set_min_proto_version, SSL_set_tlsext_host_name, …)
// and the server's ALPN selection callback. Nothing else belongs here.
#ifndef SWIFT_URING_COPENSSL_H
#define SWIFT_URING_COPENSSL_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>

/// SSL_CTX_set_min_proto_version / SSL_CTX_set_max_proto_version (macros): 1 on success.
int curing_tls_set_versions(SSL_CTX *context, int minimum, int maximum);
/// SSL_CTX_set_mode (a macro), returning the new mode.
long curing_tls_ctx_set_mode(SSL_CTX *context, long mode);
/// SSL_set_tlsext_host_name (a macro): the SNI sent by a client. 1 on success.
int curing_tls_set_server_name(SSL *ssl, const char *name);
/// The server's ALPN choice: the first of the client's protocols that `protocols` (wire format:
/// length-prefixed names, in the server's order of preference) contains; no overlap is not an
/// error (no protocol is negotiated). `protocols` must outlive the context.
void curing_tls_set_alpn_server(SSL_CTX *context, const unsigned char *protocols, unsigned int length);
/// The TLS versions' numbers (macros built from other macros).
int curing_tls_version_1_2(void);
int curing_tls_version_1_3(void);
/// The modes and options the engine sets (macros).
long curing_tls_mode_partial_write(void);
long curing_tls_mode_moving_buffer(void);
long curing_tls_mode_release_buffers(void);
unsigned long long curing_tls_option_no_renegotiation(void);
unsigned long long curing_tls_option_ignore_unexpected_eof(void);
/// The reason of the oldest error in OpenSSL's queue for this thread, written into `buffer`
/// (NUL-terminated), or an empty string; the queue is cleared. Returns the packed error code.
unsigned long curing_tls_take_error(char *buffer, size_t size);
/// The peer certificate's DER encoding: its length (0 when there is none), written into `*der`
/// (free with OPENSSL_free: curing_tls_free).
int curing_tls_peer_certificate(SSL *ssl, unsigned char **der);
void curing_tls_free(void *pointer);
/// Whether a library error is a certificate verification failure (SSL_R_CERTIFICATE_VERIFY_FAILED).
int curing_tls_is_verify_failure(unsigned long error);

/// A new P-256 key and a self-signed certificate for it (SHA-256, valid from an hour ago for
/// `days` days, CN `common_name`, subjectAltName `alt_names` such as "DNS:localhost,IP:127.0.0.1"),
/// both PEM, in buffers to free with curing_tls_free. 1 on success.
int curing_tls_self_signed(const char *common_name, const char *alt_names, int days, char **certificate,
                           size_t *certificate_length, char **key, size_t *key_length);

#endif
