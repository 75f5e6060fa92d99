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
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "throttle.h"
#include "tls.h"

/* Plaintext bytes read through the TLS layer at a time: with libevent's
 * chain header, one 4-KiB heap chunk. */
#define SESSION_TLS_READ_MAX (4096 - 128)

/* Layers TLS over the socket once the 220 has left it. */
static void session_tls_begin(struct session *s)
{
	s->tls_pending = false;
	SSL *ssl = SSL_new(s->env->tls_server);
	struct bufferevent *tls = ssl ? bufferevent_openssl_filter_new(
		s->env->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
		BEV_OPT_CLOSE_ON_FREE) : NULL;
	if (!tls) {
		if (ssl)
			SSL_free(ssl);
		session_close(s, "TLS set-up failed");
		return;
	}
	/* The TLS layer reserves room for its largest read in its input
	 * before every SSL_read, and an idle session keeps that room while
	 * nothing comes: libevent's default (16 KiB) is a 32-KiB chunk per
	 * idle TLS session, resident once the heap around it has been used;
	 * this bound keeps it within one 4-KiB chunk (what a command needs;
	 * a body is read in several turns of the same loop). */
	if (bufferevent_set_max_single_read(tls, SESSION_TLS_READ_MAX) != 0)
		log_debug("session=%llu TLS read bound refused: libevent's default stays",
			  s->ident.session_id); /* only an invalid size is refused */
	/* No shaping during the handshake, on either layer (the trickle on
	 * the socket, or a limit on the TLS layer, would meter the
	 * handshake too): a shaped client could never finish one at 5 B/s.
	 * SMTP bytes are shaped again on the TLS layer once it is up
	 * (session_tls_done), by libevent's rate limit (throttle.h). */
	shape_leave(&s->shape);
	s->bev = tls;
	session_install_callbacks(s); /* the read timeout bounds the handshake */
	session_set_wait(s, SESSION_WAIT_TLS);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

void session_tls_start(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t injected = evbuffer_get_length(in);
	if (injected) {
		log_warn("session=%llu client=%s %zu bytes after STARTTLS discarded",
			 s->ident.session_id, s->ident.addr, injected);
		evbuffer_drain(in, injected);
	}
	session_reply(s, REPLY_TLS_GO);
	s->tls = true; /* from here on, even a failed handshake is "TLS" */
	session_set_wait(s, SESSION_WAIT_TLS);
	session_txn_free(s);
	session_mem_strfree(s->helo);
	s->helo = NULL;
	s->ident.helo = NULL;
	s->esmtp = false;
	s->ident.esmtp = false;
	session_set_state(s, SESSION_INIT);
	/* The 220 goes out like any reply (shaped, if the session is); TLS
	 * starts when it has left, from the write callback. */
	s->tls_pending = true;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_tls_begin(s);
}

void session_tls_flushed(struct session *s)
{
	if (s->tls_pending)
		session_tls_begin(s);
}

void session_tls_done(struct session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	char info[SESSION_TLS_INFO_MAX] = "";
	if (ssl)
		tls_describe(ssl, info, sizeof info);
	free(s->tls_info);
	s->tls_info = strdup(info); /* NULL: the summary line says tls= */
	shape_join(&s->shape, s->bev);
	metrics_inc(METRIC_TLS_HANDSHAKES);
	log_info("session=%llu client=%s TLS established %s", s->ident.session_id,
		 s->ident.addr, info);
	session_wait_for(s, SESSION_WAIT_NONE);
}
