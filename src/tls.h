/*
 * tls: OpenSSL contexts for STARTTLS toward clients (server side) and
 * toward the backend (client side). Built at start-up; the handshakes run
 * inside bufferevent_openssl, never blocking the loop.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <openssl/ssl.h>

struct config;

/* NULL with a logged reason when the files are unusable. */
SSL_CTX *tls_server_ctx(const struct config *cfg);
SSL_CTX *tls_client_ctx(const struct config *cfg);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for a log line. */
const char *tls_describe(SSL *ssl, char *buf, size_t cap);

#endif
