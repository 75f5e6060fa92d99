#!/usr/bin/python3
"""Postfix smtpd's per-connection command counters, read from its log.

At the end of every connection smtpd logs one line

    postfix/smtpd[PID]: disconnect from NAME[ADDR] ehlo=1 xclient=1 mail=1
        rcpt=2 data=1 quit=1 commands=7

where each counter is "name=N" (all N succeeded) or "name=OK/N" (OK of N
succeeded). After XCLIENT, NAME[ADDR] is the identity XCLIENT gave, not
the peer: the peer is the address of the last "connect from" line of the
same smtpd PID (one smtpd process serves one connection at a time).

Read by the scenario tests (test_lane.py; tests/scenario
is on their path; test_postfix_counters.py checks it against the real
Postfix) and run by the benchmarks (bench/lane.sh runs this file):

    tests/scenario/postfix_counters.py MAILLOG [--offset BYTES]
        [--peer ADDR] [--not-peer ADDR] [--messages N] [--label TEXT]

prints one "key=value" summary line (connections, those that issued MAIL
per message, MAIL commands per message, the share of the connections
with MAIL that had mail=1, data=1 or bdat=1, and no rset) and the commonest counter
sets, one a line. Postfix 3.7 logs a successful XCLIENT as "xclient=0/1"
(the connection then carries the new identity's mail): count issued
commands (the second number), not successes, for XCLIENT.
Bounds: reads the log once, line by line; a line that does not parse is
skipped; counter values are whatever digits Postfix wrote.
"""
import argparse
import collections
import re
import sys

_LINE = re.compile(r"postfix/smtpd\[(\d+)\]: (connect|disconnect) from "
                   r"([^\s\[]*)\[([^\]]*)\](\S*)(.*)$")
_COUNTER = re.compile(r"^([a-z]+)=(\d+)(?:/(\d+))?$")


def parse_counters(text):
    """'ehlo=1 rcpt=1/2 commands=3/4' -> {'ehlo': (1, 1), 'rcpt': (1, 2),
    ...}: (succeeded, issued) per command name. Words that are not
    counters are ignored."""
    out = {}
    for word in text.split():
        m = _COUNTER.match(word)
        if m:
            ok = int(m.group(2))
            out[m.group(1)] = (ok, int(m.group(3)) if m.group(3) else ok)
    return out


def connections(lines):
    """One dict per "disconnect from" line, in log order:
    {'pid', 'peer' (the address that connected, None when its connect line
    is not in the text), 'client' (the address logged at the disconnect),
    'counters'}. lines: an iterable of log lines (str)."""
    peer_of = {}
    for line in lines:
        m = _LINE.search(line)
        if not m:
            continue
        pid, what, addr = m.group(1), m.group(2), m.group(4)
        if what == "connect":
            peer_of[pid] = addr
            continue
        yield {"pid": pid, "peer": peer_of.pop(pid, None), "client": addr,
               "counters": parse_counters(m.group(6))}


def count(conn, name):
    """Commands of this name the connection issued (0 when absent)."""
    return conn["counters"].get(name, (0, 0))[1]


def ends_of_data(conn):
    """Messages the connection sent: DATA commands, or BDAT ones when the
    client chunked (sluice sends each message as one BDAT ... LAST when
    the server offers CHUNKING; a client that sends several chunks a
    message is not counted right here)."""
    return count(conn, "data") + count(conn, "bdat")


def one_message(conn):
    """The connection carried one transaction and nothing else: one MAIL,
    one DATA (or BDAT), no RSET."""
    return (count(conn, "mail") == 1 and ends_of_data(conn) == 1
            and count(conn, "rset") == 0)


def signature(conn):
    """The counters without 'commands', in log order, as Postfix wrote
    them: the shape of a connection, for a histogram."""
    return " ".join("%s=%d" % (k, v[1]) if v[0] == v[1]
                    else "%s=%d/%d" % (k, v[0], v[1])
                    for k, v in conn["counters"].items() if k != "commands")


def summary(conns, messages=None):
    """Figures over a list of connections. messages: the messages the
    caller knows were delivered (default: the DATA and BDAT commands that
    succeeded, as Postfix counted them)."""
    n = len(conns)
    data_ok = sum(c["counters"].get(k, (0, 0))[0] for c in conns
                  for k in ("data", "bdat"))
    msgs = messages if messages is not None else data_ok
    s = {
        "connections": n,
        "messages": msgs,
        "data_ok": data_ok,
        "mail": sum(count(c, "mail") for c in conns),
        "rcpt": sum(count(c, "rcpt") for c in conns),
        "rset": sum(count(c, "rset") for c in conns),
        "xclient": sum(count(c, "xclient") for c in conns),
        "ehlo": sum(count(c, "ehlo") for c in conns),
        "with_mail": sum(1 for c in conns if count(c, "mail") > 0),
        "one_message": sum(1 for c in conns if one_message(c)),
    }
    # Per message, only the connections that issued MAIL: a proxy's idle
    # pool connections (EHLO, closed at shutdown) are counted apart, in
    # "connections" (all) against "with_mail".
    s["conns_per_msg"] = s["with_mail"] / msgs if msgs else float("nan")
    s["mail_per_msg"] = s["mail"] / msgs if msgs else float("nan")
    s["one_message_share"] = (s["one_message"] / s["with_mail"]
                              if s["with_mail"] else float("nan"))
    return s


def histogram(conns, most=8):
    """[(count, signature)], commonest first."""
    c = collections.Counter(signature(x) for x in conns)
    return [(k, sig) for sig, k in c.most_common(most)]


def format_summary(s, label=""):
    keys = ("connections", "messages", "data_ok", "conns_per_msg", "mail",
            "mail_per_msg", "rcpt", "rset", "xclient", "ehlo", "with_mail",
            "one_message", "one_message_share")
    return (("postfix_counters label=%s " % label if label else "postfix_counters ")
            + " ".join("%s=%s" % (k, ("%.3f" % s[k]) if isinstance(s[k], float)
                                  else s[k]) for k in keys))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("maillog")
    ap.add_argument("--offset", type=int, default=0,
                    help="start reading at this byte (a run's slice)")
    ap.add_argument("--peer", help="only connections from this address")
    ap.add_argument("--not-peer", help="only connections not from this address")
    ap.add_argument("--messages", type=int, help="messages delivered")
    ap.add_argument("--label", default="")
    ap.add_argument("--most", type=int, default=6)
    a = ap.parse_args(argv)
    with open(a.maillog, "rb") as f:
        f.seek(a.offset)
        text = f.read().decode("utf-8", errors="replace")
    conns = [c for c in connections(text.splitlines())
             if (a.peer is None or c["peer"] == a.peer)
             and (a.not_peer is None or c["peer"] != a.not_peer)]
    print(format_summary(summary(conns, a.messages), a.label))
    for k, sig in histogram(conns, a.most):
        print("  %6d  %s" % (k, sig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
