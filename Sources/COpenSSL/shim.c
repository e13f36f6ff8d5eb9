#include "COpenSSL.h"
#include <string.h>

int curing_tls_set_versions(SSL_CTX *context, int minimum, int maximum) {
    return SSL_CTX_set_min_proto_version(context, minimum) && SSL_CTX_set_max_proto_version(context, maximum);
}

long curing_tls_ctx_set_mode(SSL_CTX *context, long mode) { return SSL_CTX_set_mode(context, mode); }

int curing_tls_set_server_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
    (void)ssl;
    const unsigned char *server = arg;
    unsigned int serverLength = server[0] | (server[1] << 8);  // two bytes of length, then the list
    unsigned char *selected = NULL;
    // Server preference: the first of ours that the client offers.
    if (SSL_select_next_proto(&selected, outlen, server + 2, serverLength, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

void curing_tls_set_alpn_server(SSL_CTX *context, const unsigned char *protocols, unsigned int length) {
    (void)length;
    SSL_CTX_set_alpn_select_cb(context, select_alpn, (void *)protocols);
}

int curing_tls_version_1_2(void) { return TLS1_2_VERSION; }
int curing_tls_version_1_3(void) { return TLS1_3_VERSION; }
long curing_tls_mode_partial_write(void) { return SSL_MODE_ENABLE_PARTIAL_WRITE; }
long curing_tls_mode_moving_buffer(void) { return SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER; }
long curing_tls_mode_release_buffers(void) { return SSL_MODE_RELEASE_BUFFERS; }
unsigned long long curing_tls_option_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }
unsigned long long curing_tls_option_ignore_unexpected_eof(void) { return SSL_OP_IGNORE_UNEXPECTED_EOF; }

unsigned long curing_tls_take_error(char *buffer, size_t size) {
    unsigned long first = ERR_get_error();
    if (size > 0) buffer[0] = 0;
    if (first != 0 && size > 0) {
        const char *reason = ERR_reason_error_string(first);
        if (reason == NULL) {
            ERR_error_string_n(first, buffer, size);
        } else {
            strncpy(buffer, reason, size - 1);
            buffer[size - 1] = 0;
        }
    }
    ERR_clear_error();
    return first;
}

int curing_tls_peer_certificate(SSL *ssl, unsigned char **der) {
    *der = NULL;
    X509 *certificate = SSL_get1_peer_certificate(ssl);
    if (certificate == NULL) return 0;
    int length = i2d_X509(certificate, der);
    X509_free(certificate);
    return length > 0 ? length : 0;
}

void curing_tls_free(void *pointer) { OPENSSL_free(pointer); }

int curing_tls_is_verify_failure(unsigned long error) {
    return ERR_GET_LIB(error) == ERR_LIB_SSL && ERR_GET_REASON(error) == SSL_R_CERTIFICATE_VERIFY_FAILED;
}
