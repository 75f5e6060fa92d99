/*
 * control: the supervisor's control socket, <state_dir>/control.sock, which
 * sluicectl talks to (wire format: control_proto.h).
 */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include <stddef.h>

struct event_base;
struct config;

/* What the supervisor does for a command; context comes in through here. */
struct control_hooks {
	/* The configuration in force (for the store's location). */
	const struct config *(*config)(void);
	/* sluicectl reload: 0, or -1 with the reason in err. */
	int (*reload)(char *err, size_t cap);
	/* sluicectl drain: the SIGTERM path. */
	void (*drain)(void);
};

/* Binds the socket (mode 0600, owner: the supervisor's user), loads the
 * allow/deny entries from the store and publishes them to the workers
 * (acl.h). -1 when another sluice answers on the socket (two daemons on
 * one state_dir); a socket that cannot be made is logged and sluice runs
 * without sluicectl (mail matters more than the control command). */
int control_start(struct event_base *base, const char *state_dir,
		  const struct control_hooks *hooks);
/* Re-reads the entries from the store and publishes them (after a
 * reload: the store may have moved). */
void control_refresh(void);
/* In a freshly forked worker: closes the control fds it inherited, so
 * that only the supervisor holds them. */
void control_close_fds(void);
/* Removes the socket (at exit). */
void control_stop(void);

#endif
