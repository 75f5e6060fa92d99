/*
 * control: the supervisor's control socket, <state_dir>/control.sock, which
 * sluicectl talks to (wire format: control_proto.h).
 */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct config;

/* What the supervisor does for a command; context comes in through here. */
struct control_hooks {
	/* The configuration in force (for the store's location). */
	const struct config *(*config)(void);
	/* sluicectl reload: 0 once the new workers are starting (the answer
	 * waits for control_settle), or -1 with the reason in err. */
	int (*reload)(char *err, size_t cap);
	/* sluicectl upgrade: returns only on failure, -1 with the reason in
	 * err; on success the program is replaced (see upgrade.h) and the
	 * new one answers through control_settle. */
	int (*upgrade)(char *err, size_t cap);
	/* sluicectl drain: the SIGTERM path. */
	void (*drain)(void);
};

/* Binds the socket (mode 0600, owner: the supervisor's user), loads the
 * allow/deny entries from the store and publishes them to the workers
 * (acl.h). When another sluice already answers on the socket (two daemons
 * sharing one state_dir), or the socket cannot be made, that is logged and
 * this sluice runs without sluicectl (mail matters more than the control
 * command). Always 0. */
int control_start(struct event_base *base, const char *state_dir,
		  const struct control_hooks *hooks);
/* Re-reads the entries from the store and publishes them (after a
 * reload: the store may have moved). */
void control_refresh(void);
/* In a freshly forked worker: closes the control fds it inherited, so
 * that only the supervisor holds them. */
void control_close_fds(void);
/* Answers every connection that waits for a reload or an upgrade: ok
 * (text: for an upgrade, what runs now), or the failure's reason in
 * text. */
void control_settle(bool ok, const char *text);

/* A connection waiting for control_settle, handed across an upgrade:
 * always sluicectl upgrade's (an upgrade is refused while a reload's
 * answer is owed), so no verb is handed. */
struct control_waiter {
	int fd;
	bool json;
};
/* Before an upgrade: the listening socket (-1 when none) and up to cap
 * waiting connections; returns how many. Nothing changes here. */
size_t control_handover(int *listen_fd, struct control_waiter *w, size_t cap);
/* In the upgraded program, before control_start: take these over instead
 * of binding the socket again. */
void control_adopt(int listen_fd, const struct control_waiter *w, size_t n);

/* Removes the socket (at exit). */
void control_stop(void);

#endif
