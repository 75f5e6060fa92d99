/*
 * session_tls: STARTTLS toward clients (RFC 3207).
 *
 * Checklist: anything the client sent after STARTTLS in the same flight is
 * discarded unanswered (command injection, CVE-2011-0411 class); TLS is
 * layered over the same bufferevent, so the rest of the session code never
 * asks whether it talks TLS; after the handshake everything learned before
 * it (HELO, transaction) is forgotten; protocol and cipher are logged in
 * one line. The handshake is not shaped and is bounded by smtpd_timeout.
 */
#include "session_priv.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdlib.h>

#include "log.h"
#include "metrics.h"
#include "throttle.h"
#include "tls.h"
#include "worker.h"

void session_tls_start(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t injected = evbuffer_get_length(in);
	if (injected) {
		log_warn("session=%llu client=%s %zu bytes after STARTTLS discarded",
			 s->ident.session_id, s->ident.addr, injected);
		evbuffer_drain(in, injected);
	}
	SSL *ssl = SSL_new(worker->tls_server);
	if (!ssl) {
		session_reply(s, REPLY_TLS_LOCAL_PROBLEM);
		return;
	}
	session_reply(s, REPLY_TLS_GO);
	struct bufferevent *tls = bufferevent_openssl_filter_new(
		worker->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
		BEV_OPT_CLOSE_ON_FREE);
	if (!tls) {
		SSL_free(ssl);
		session_close(s, "TLS set-up failed");
		return;
	}
	/* The handshake runs on the socket below: lift any rate limit there
	 * (a shaped client could never finish a handshake at 5 B/s) and put
	 * it on the TLS layer, so SMTP bytes stay shaped. */
	if (s->shaped) {
		throttle_apply(s->bev, false);
		throttle_apply(tls, true);
	}
	s->bev = tls;
	s->tls = true; /* from here on, even a failed handshake is "TLS" */
	session_install_callbacks(s); /* the read timeout bounds the handshake */
	s->busy = true;
	bufferevent_enable(tls, EV_READ | EV_WRITE);
	session_txn_free(s);
	free(s->helo);
	s->helo = NULL;
	s->ident.helo = NULL;
	s->esmtp = false;
	s->ident.esmtp = false;
	session_set_state(s, SESSION_INIT);
}

void session_tls_done(struct session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	if (ssl)
		tls_describe(ssl, s->tls_info, sizeof s->tls_info);
	metrics_inc(METRIC_TLS_HANDSHAKES);
	log_info("session=%llu client=%s TLS established %s", s->ident.session_id,
		 s->ident.addr, s->tls_info);
	session_set_busy(s, false);
}
