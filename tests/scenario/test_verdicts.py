"""
Verdict scenarios (issue 9): what DNS failures mean, and what the mail
server's own verdicts and a client's outcomes teach the classifier, in
front of a real Postfix, with real dnsmasq instances.

A "refusing" dnsmasq is one without 127.in-addr.arpa among its local=
zones and with no upstream: it answers REFUSED for reverse look-ups of
addresses its hosts file does not hold, as a resolver that refuses
recursion for sluice's address does.

Every wait is bounded in time, every loop in count and time.
"""

import os
import re
import time

import pytest

import harness
from harness import NO_PTR_ADDRS, SmtpRaw
from test_shaping import (assert_alive, metric, metrics_text, session_log,
                          summary, wait_log)

# No PTR record in either dnsmasq (not in the hosts file).
UNKNOWN_ADDRS = NO_PTR_ADDRS + ("127.0.0.70",)


def refusing_dns(workdir, extra=()):
    d = harness.Dnsmasq(os.path.join(workdir, "refusing-dns"), n_bulk=0,
                        zones=("example", "test", "bl.test", "wl.test"),
                        extra=extra)
    d.write_config()
    d.start()
    return d


def rcpt_reply(sl, source, helo="client.example"):
    """Connects from source, EHLO, MAIL, RCPT; returns (ehlo seconds,
    RCPT (code, text))."""
    with SmtpRaw(sl.host, sl.port, source=source, timeout=20) as c:
        code, text = c.read_reply()
        assert code == 220, (code, text)
        t0 = time.monotonic()
        assert c.cmd("EHLO " + helo)[0] == 250
        ehlo_s = time.monotonic() - t0
        assert c.cmd("MAIL FROM:<a@example.net>")[0] == 250
        r = c.cmd("RCPT TO:<alice@example.com>")
        c.cmd("QUIT")
    return ehlo_s, r


# ------------------------------------- 01 REFUSED is not "no PTR"

@pytest.mark.deadline(60)
def test_verdicts_01_refused_ptr_is_tempunavail_not_noptr(workdir, dns, postfix, sluice):
    """A resolver refusing reverse look-ups: no NOPTR, no shaping even at
    shape_threshold 1, NAME=[TEMPUNAVAIL] so Postfix's
    reject_unknown_client_hostname answers 450; a real NXDOMAIN still
    gives [UNAVAILABLE] and Postfix's 550. One warning a minute."""
    rdns = refusing_dns(workdir)
    try:
        pf = postfix(extra={
            "smtpd_client_restrictions": "reject_unknown_client_hostname",
            "unknown_client_reject_code": "550"})
        mport = harness.free_port()
        sl = sluice(pf, dns_servers="127.0.0.1:%d" % rdns.port,
                    shape_threshold=1, greet_wait="500ms", dns_timeout="2s",
                    metrics_listen="127.0.0.1:%d" % mport)
        for addr in UNKNOWN_ADDRS:
            ehlo_s, (code, text) = rcpt_reply(sl, addr)
            assert code == 450, (addr, code, text)
            assert ehlo_s < 1.0, (addr, ehlo_s)  # not shaped
            m = summary(sl, addr)
            assert m, session_log(sl, addr)
            assert m[3] == "no", session_log(sl, addr)
            lines = "\n".join(session_log(sl, addr))
            assert "NOPTR" not in lines and "SHAPED" not in lines, lines
            assert re.search(r"client=%s port=\d+ name=\[TEMPUNAVAIL\] "
                             % re.escape(addr), sl.log()), lines
        warned = re.findall(r"dns: server=reverse client=\S+ TEMPFAIL refused", sl.log())
        assert len(warned) == 1, warned  # at most once a minute
        assert metric(metrics_text(mport), "sluice_dns_failures_total") >= len(UNKNOWN_ADDRS)
        assert "refused" in rdns.log().lower() or "REFUSED" in rdns.log()
        assert_alive(sl)

        # The same backend behind a sluice on an answering resolver: a
        # real NXDOMAIN is a missing name, and Postfix refuses for good.
        base = len(sl.log())  # both write DIR/sluice.log
        sl2 = sluice(pf, shape_threshold=10)
        addr = NO_PTR_ADDRS[0]
        _, (code, text) = rcpt_reply(sl2, addr)
        assert code == 550, (code, text)
        assert wait_log(sl2, r"client=%s NOPTR" % re.escape(addr), 5), sl2.log()[-2000:]
        assert wait_log(sl2, r"client=%s port=\d+ name=\[UNAVAILABLE\] " % re.escape(addr),
                        5), sl2.log()[-2000:]
        assert "TEMPFAIL" not in sl2.log()[base:]
        assert_alive(sl2)
    finally:
        rdns.stop()


# ------------------------------------- 02 a list refusing our resolver

@pytest.mark.deadline(60)
def test_verdicts_02_dnsbl_error_code_counted_and_warned(workdir, postfix, sluice):
    """A DNSBL answering 127.255.255.254 (Spamhaus: query via a public
    resolver) lists nobody, and says so: a metric and one warning a
    minute; REFUSED from the list counts as not listed, too."""
    listed = ("127.0.0.66", "127.0.0.67")
    extra = ["host-record=%s.err.test,127.255.255.254" % ".".join(reversed(a.split(".")))
             for a in listed]
    rdns = refusing_dns(workdir, extra=["local=/err.test/"] + extra)
    try:
        pf = postfix()
        mport = harness.free_port()
        sl = sluice(pf, dns_servers="127.0.0.1:%d" % rdns.port,
                    dnsbl_sites="err.test*5 refused.nowhere*5", shape_threshold=3,
                    greet_wait="500ms", dns_timeout="2s",
                    metrics_listen="127.0.0.1:%d" % mport)
        for addr in listed:
            ehlo_s, (code, text) = rcpt_reply(sl, addr)
            assert code == 250, (addr, code, text)
            assert ehlo_s < 1.0, (addr, ehlo_s)
            lines = "\n".join(session_log(sl, addr))
            assert "DNSBL" not in lines and "SHAPED" not in lines, lines
        text = metrics_text(mport)
        assert metric(text, "sluice_dnsbl_error_answers_total") == len(listed), text
        warned = re.findall(r"dnsbl: site=err\.test client=\S+ ERRORCODE 127\.255\.255\.254",
                            sl.log())
        assert len(warned) == 1, warned
        refused = re.findall(r"dns: server=refused\.nowhere client=\S+ TEMPFAIL refused",
                             sl.log())
        assert len(refused) == 1, refused
        assert_alive(sl)
    finally:
        rdns.stop()
