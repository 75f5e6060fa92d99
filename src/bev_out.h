/*
 * bev_out: the output of a socket bufferevent written straight to its
 * socket, outside libevent's write event (session.c and backend.c write
 * this way between replies and commands: no write event added and deleted
 * per write; BENCHMARKS.md, "Where a message's CPU goes").
 */
#ifndef SLUICE_BEV_OUT_H
#define SLUICE_BEV_OUT_H

struct bufferevent;

/* One write (writev) of as much of bev's output as the socket takes;
 * what it does not take stays in the output and writing is enabled on
 * bev, so that libevent carries it under the write timeout and calls the
 * write callback once it has left. 0, or -1 when the write failed or
 * writing could not be enabled (errno set; EAGAIN and EINTR are 0). Only
 * for a socket bufferevent (not a filter) whose writing is disabled:
 * libevent would otherwise write the same bytes. */
int bev_out_write(struct bufferevent *bev);

#endif
