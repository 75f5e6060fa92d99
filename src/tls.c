/*
 * tls: OpenSSL context set-up (see tls.h). Certificates are read once at
 * start-up (and re-read on reload by the new worker generation), so no file
 * I/O happens on a handshake.
 */
#include "tls.h"

#include <openssl/err.h>
#include <stdio.h>

#include "config.h"
#include "log.h"

static void tls_log_errors(const char *what)
{
	unsigned long e;
	char buf[256];
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof buf);
		log_err("tls: %s: %s", what, buf);
	}
}

SSL_CTX *tls_server_ctx(const struct config *cfg)
{
	if (!cfg->tls_cert_file[0])
		return NULL;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		tls_log_errors("context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* No session cache: each worker is its own process, and tickets cost
	 * memory per idle session for little gain in SMTP. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
	/* TLS 1.3 sends tickets even with SSL_OP_NO_TICKET (stateful ones
	 * then), each a copy of the session; with no cache they serve no
	 * one. */
	(void)SSL_CTX_set_num_tickets(ctx, 0);
	/* Record buffers (about 34 KiB) are freed whenever they are empty,
	 * so an idle TLS session does not keep them (issue 12: <= 40 KiB). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	const char *key = cfg->tls_key_file[0] ? cfg->tls_key_file : cfg->tls_cert_file;
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		tls_log_errors(cfg->tls_cert_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL_CTX *tls_client_ctx(const struct config *cfg)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		tls_log_errors("client context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* The backend is the site's own server, usually on loopback, reached
	 * by address; its certificate rarely names that address. Encryption
	 * without verification, as Postfix's smtp_tls_security_level=encrypt. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

const char *tls_describe(SSL *ssl, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s %s", SSL_get_version(ssl),
		 SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
	return buf;
}
