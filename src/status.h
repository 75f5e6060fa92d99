/*
 * status: the supervisor's view of the running daemon, for people and
 * scripts: GET / (one page, no external assets), GET /status.js and
 * GET /status.json on the metrics listener, and the renderings that
 * sluicectl status and sessions print (text or JSON). Every rendering is
 * made from one snapshot (snapshot.h) plus the counters (metrics.h) and a
 * one-hour history of them kept here.
 */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

#include <stdbool.h>

struct event_base;
struct evbuffer;
struct evhttp;
struct snapshot;

#define STATUS_MINUTES 60        /* history kept, one sample a minute */
#define STATUS_TOP_CLIENTS 20    /* clients on the page, by score */

/* Starts the history timer on base and, when http is not NULL, serves the
 * page there. 0 or -1. */
int status_start(struct event_base *base, struct evhttp *http);

/* Renders into b; 0 or -1 (out of memory). */
int status_render(struct evbuffer *b, const struct snapshot *snap, bool json);
int status_render_sessions(struct evbuffer *b, const struct snapshot *snap,
			   bool json, bool shaped_only);

/* The embedded page and script (status_assets.c). */
extern const char status_asset_html[];
extern const char status_asset_js[];

#endif
