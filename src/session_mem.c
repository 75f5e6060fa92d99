/*
 * session_mem: where a session's long-lived memory comes from.
 *
 * A session's struct and its defer event (one slot: the event right after
 * the struct, set up with event_assign) and its short names (the HELO
 * argument, the confirmed PTR name) live as long as the session, parked
 * or not. They come from per-worker slabs (slab.c), not from malloc's
 * heap, where they would sit between the transient objects of busy
 * sessions (a bufferevent, 976 bytes, and 1-KiB chains, held for about a
 * second around the greeting and each command) and keep the pages of
 * that peak resident after it (BENCHMARKS.md, "What a session allocates,
 * and when": 0.44 KiB a session at 10,000 sessions).
 *
 * With nothing long-lived left on the heap's top after a crowd, the top
 * can be given back: the worker's heap trim threshold is fixed at
 * SESSION_MEM_TRIM_THRESHOLD (glibc would otherwise raise it with the
 * largest mapped chunk freed so far, 2 MiB and more before the worker
 * accepts anything, and never give the top back), and glibc's fastbins
 * are switched off (M_MXFAST 0): a freed chunk of up to 128 bytes (the
 * 40-byte callback entries and 136-byte evbuffers of every bufferevent,
 * the DNS request's pieces) stayed in them, never merged with its free
 * neighbours, so that the free memory around it could be neither reused
 * for larger chunks nor given back. The per-size tcache (7 chunks a size)
 * still serves the small allocations that come and go.
 *
 * Rejected: malloc_trim a little after sessions park (it gave 10,000
 * idle sessions 1.19 KiB each instead of 1.33): with tens of thousands
 * of sessions it held the loop 2 ms (median) to 120 ms at a time, every
 * 2 s per worker, and the pages it gave back were faulted in again at
 * once by the next bufferevents (`bench/peers.sh --scale 50000`: 1.68 ->
 * 2.01 cores).
 *
 * Allocation failure: NULL, and the caller closes that one session.
 * Loop thread only. Exports session_mem_new, session_mem_free,
 * session_mem_strndup, session_mem_strfree.
 */
#include "session_priv.h"

#include <malloc.h>
#include <event2/event.h>

#include "slab.h"

/* The heap's free top above this is given back to the system. glibc's
 * default; set explicitly, so that it does not grow. */
#define SESSION_MEM_TRIM_THRESHOLD (128 * 1024)
/* Name slots: a tag byte, the name, its NUL (46 bytes of name: most HELO
 * and PTR names; a longer one is malloc'ed). */
#define SESSION_MEM_NAME_SLOT 48
/* Where the defer event starts in a session's slot. */
#define SESSION_MEM_EV_OFF ((sizeof(struct session) + 15) & ~(size_t)15)

static struct slab session_slab, name_slab;
static bool session_mem_ready;

static void session_mem_init(void)
{
	slab_init(&session_slab, SESSION_MEM_EV_OFF + event_get_struct_event_size());
	slab_init(&name_slab, SESSION_MEM_NAME_SLOT);
	/* 0: glibc refused the value; the session works all the same. */
	(void)mallopt(M_TRIM_THRESHOLD, SESSION_MEM_TRIM_THRESHOLD);
	(void)mallopt(M_MXFAST, 0);
	session_mem_ready = true;
}

struct session *session_mem_new(void)
{
	if (!session_mem_ready)
		session_mem_init();
	struct session *s = slab_alloc(&session_slab);
	if (s)
		s->defer_ev = (struct event *)((char *)s + SESSION_MEM_EV_OFF);
	return s;
}

void session_mem_free(struct session *s)
{
	slab_free(&session_slab, s);
}

char *session_mem_strndup(const char *p, size_t len)
{
	if (!session_mem_ready)
		session_mem_init();
	return slab_strndup(&name_slab, p, len);
}

void session_mem_strfree(char *p)
{
	slab_strfree(&name_slab, p);
}
