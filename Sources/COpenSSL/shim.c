#include "COpenSSL.h"
#include <openssl/rand.h>
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

/// The bytes a memory BIO holds, copied into a new buffer (freed with OPENSSL_free).
static int take_bio(BIO *bio, char **out, size_t *length) {
    char *data = NULL;
    long count = BIO_get_mem_data(bio, &data);
    if (count <= 0) return 0;
    *out = OPENSSL_malloc((size_t)count);
    if (*out == NULL) return 0;
    memcpy(*out, data, (size_t)count);
    *length = (size_t)count;
    return 1;
}

int curing_tls_self_signed(const char *common_name, const char *alt_names, int days, char **certificate,
                           size_t *certificate_length, char **key, size_t *key_length) {
    int ok = 0;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x509 = X509_new();
    BIO *certificateBIO = BIO_new(BIO_s_mem());
    BIO *keyBIO = BIO_new(BIO_s_mem());
    *certificate = NULL;
    *key = NULL;
    if (pkey == NULL || x509 == NULL || certificateBIO == NULL || keyBIO == NULL) goto done;
    unsigned char serial[8];
    if (RAND_bytes(serial, sizeof serial) != 1) goto done;
    BIGNUM *number = BN_bin2bn(serial, sizeof serial, NULL);
    if (number == NULL) goto done;
    BN_to_ASN1_INTEGER(number, X509_get_serialNumber(x509));
    BN_free(number);
    if (X509_set_version(x509, 2) != 1) goto done;
    X509_gmtime_adj(X509_getm_notBefore(x509), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x509), (long)days * 24 * 3600);
    if (X509_set_pubkey(x509, pkey) != 1) goto done;
    X509_NAME *name = X509_get_subject_name(x509);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)common_name, -1, -1, 0) != 1)
        goto done;
    if (X509_set_issuer_name(x509, name) != 1) goto done;
    if (alt_names != NULL && alt_names[0] != 0) {
        X509V3_CTX context;
        X509V3_set_ctx_nodb(&context);
        X509V3_set_ctx(&context, x509, x509, NULL, NULL, 0);
        X509_EXTENSION *extension = X509V3_EXT_conf_nid(NULL, &context, NID_subject_alt_name, alt_names);
        if (extension == NULL) goto done;
        int added = X509_add_ext(x509, extension, -1);
        X509_EXTENSION_free(extension);
        if (added != 1) goto done;
    }
    if (X509_sign(x509, pkey, EVP_sha256()) <= 0) goto done;
    if (PEM_write_bio_X509(certificateBIO, x509) != 1) goto done;
    if (PEM_write_bio_PrivateKey(keyBIO, pkey, NULL, NULL, 0, NULL, NULL) != 1) goto done;
    if (!take_bio(certificateBIO, certificate, certificate_length)) goto done;
    if (!take_bio(keyBIO, key, key_length)) goto done;
    ok = 1;
done:
    if (!ok) {
        OPENSSL_free(*certificate);
        OPENSSL_free(*key);
        *certificate = NULL;
        *key = NULL;
    }
    BIO_free(certificateBIO);
    BIO_free(keyBIO);
    X509_free(x509);
    EVP_PKEY_free(pkey);
    return ok;
}
