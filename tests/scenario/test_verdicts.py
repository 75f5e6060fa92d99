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

import concurrent.futures
import os
import re
import socket
import subprocess
import time

import pytest

import harness
from harness import NO_PTR_ADDRS, SmtpRaw, dot_stuff
from test_redis import redis_server  # noqa: F401 (the real Redis fixture)
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
                    metrics_listen="127.0.0.1:%d" % mport, workers=2)
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
        # At most once a minute in each worker (the limit is per process).
        assert 1 <= len(warned) <= 2, warned
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


# ------------------------------------- outcomes, not signals

def message(tag, body=b"Hello from the verdict tests.\r\n"):
    t = tag.encode()
    return dot_stuff(b"From: <a@example.net>\r\nTo: <alice@example.com>\r\n"
                     b"Subject: " + t + b"\r\nMessage-ID: <" + t + b"@example.net>\r\n"
                     b"\r\n" + body)


def deliver(sl, source, tag, helo="client.example", body=None, timeout=30):
    """One session: EHLO, one message, QUIT. Returns (seconds from EHLO
    sent to its reply, final reply code)."""
    with SmtpRaw(sl.host, sl.port, source=source, timeout=timeout) as c:
        assert c.read_reply()[0] == 220
        t0 = time.monotonic()
        c.ehlo(helo)
        ehlo_s = time.monotonic() - t0
        _, final = c.send_message("a@example.net", ["alice@example.com"],
                                  message(tag, body) if body else message(tag))
        c.cmd("QUIT")
    return ehlo_s, final[0] if final else None


def hang_up_while_shaped(sl, source):
    """Talks before the greeting (PREGREET, 3: shaped), waits for the
    first byte of the trickled greeting, hangs up."""
    s = socket.socket()
    try:
        s.bind((source, 0))
        s.settimeout(15)
        s.connect((sl.host, sl.port))
        s.sendall(b"EHLO pushy.example\r\n")
        assert s.recv(1)
    finally:
        s.close()


def log_lines(sl, pattern):
    return re.findall(pattern, sl.log())


def wait_log_after(sl, mark, pattern, timeout=10):
    rx = re.compile(pattern)
    return harness.wait_until(lambda: rx.search(sl.log()[mark:]), timeout)


BURST_NET = "127.0.9."  # no PTR records: NOPTR (1) for every address


@pytest.mark.deadline(150)
def test_verdicts_03_burst_of_one_network_not_shaped_until_it_hangs_up(postfix, sluice):
    """200 clients of one /24, unlisted, without PTR, in one burst: none
    shaped (NOPTR is never recorded as reputation), all delivered. Then 20
    of its addresses hang up while shaped: a new address without PTR gets
    the network's REPUTATION (2) + NOPTR (1) and is shaped."""
    pf = postfix()
    sl = sluice(pf, shape_threshold=3, greet_wait="300ms", shape_rate=5,
                shape_time="20s", dns_timeout="2s", pool=8)
    addrs = [BURST_NET + str(i) for i in range(1, 201)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as ex:
        results = list(ex.map(lambda a: deliver(sl, a, "burst-" + a), addrs))
    slow = [(a, r) for a, r in zip(addrs, results) if r[0] >= 1.0 or r[1] != 250]
    assert not slow, slow[:10]
    assert not log_lines(sl, r"client=127\.0\.9\.\d+ (SHAPED|REPUTATION)"), \
        log_lines(sl, r"[^\n]*client=127\.0\.9\.\d+ (?:SHAPED|REPUTATION)[^\n]*")[:5]
    assert len(log_lines(sl, r"client=127\.0\.9\.\d+ NOPTR")) == 200
    got = pf.wait_messages(200, 60, lambda m: (m.subject or "").startswith("burst-"))
    assert len(got) == 200, len(got)

    # 20 other addresses of the /24 hang up while shaped.
    bad = [BURST_NET + str(i) for i in range(201, 221)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as ex:
        list(ex.map(lambda a: hang_up_while_shaped(sl, a), bad))
    assert harness.wait_until(
        lambda: len(log_lines(sl, r"client=127\.0\.9\.(?:20[1-9]|21\d|220) HANGUP")) == 20,
        20), sl.log()[-3000:]
    time.sleep(1)  # the store writes its batch on the pool

    new = BURST_NET + "230"
    with SmtpRaw(sl.host, sl.port, source=new, timeout=30) as c:
        assert wait_log(sl, r"client=%s SHAPED" % re.escape(new), 10), \
            "\n".join(session_log(sl, new))
    lines = "\n".join(session_log(sl, new))
    assert re.search(r"REPUTATION weight=2 score=\d+ from=network", lines), lines
    assert "NOPTR" in lines, lines
    assert_alive(sl)


def fcrdns(i):
    """A bulk client address with a forward-confirmed name, and its name."""
    a = harness.bulk_client_addrs(i + 1)[i]
    return a, harness.bulk_client_name(a)


SPAM = b"Buy XSPAMX now.\r\n"
BODY_CHECKS = {"body_checks": "regexp:{ {/XSPAMX/ REJECT content refused for testing} }"}
HALFLIFE_S = 8


def quit_shaped(sl, source):
    """A session that is shaped: waits for the SHAPED line, then quits
    politely (a hang-up would be an outcome of its own)."""
    with SmtpRaw(sl.host, sl.port, source=source, timeout=20) as s:
        assert wait_log(sl, r"client=%s SHAPED" % re.escape(source), 10), \
            "\n".join(session_log(sl, source))
        assert s.read_reply()[0] == 220
        assert s.cmd("QUIT")[0] == 221


@pytest.mark.deadline(120)
@pytest.mark.parametrize("store", ["lmdb", "redis"])
def test_verdicts_04_content_refusal_shapes_client_then_network_then_decays(
        request, postfix, sluice, store):
    """Forward-confirmed clients (nothing else counts against them): a
    client that delivers a clean message and then, in the same session,
    one that Postfix's body_checks refuses (5.7.1) is shaped on its next
    connection despite the pass it held; a different address of its /24
    is not, until several (network_min_addresses = 2 here) addresses have
    been refused; after the evidence has decayed (half-life 8 s here) the
    client is no longer shaped. One refusal each never refuses anyone.
    Run with each store: LMDB, and a real Redis."""
    stored = {}
    if store == "redis":
        r = request.getfixturevalue("redis_server")()
        stored = dict(store="redis", redis_server="127.0.0.1:%d" % r.port,
                      redis_timeout="500ms")
    pf = postfix(extra=BODY_CHECKS)
    sl = sluice(pf, shape_threshold=3, reject_threshold=8, greet_wait="300ms",
                shape_rate=200, shape_time="20s",
                reputation_halflife="%ds" % HALFLIFE_S, network_min_addresses=2,
                **stored)
    (a, a_name), (b, b_name), (c, c_name), (e, e_name) = [fcrdns(i) for i in range(4)]

    # A earns a pass, comes back with it, and sends clean + spam.
    assert deliver(sl, a, "a-clean-0", a_name)[1] == 250
    assert summary(sl, a)
    time.sleep(0.5)  # the pass is written by the store's next batch
    with SmtpRaw(sl.host, sl.port, source=a, timeout=20) as s:
        assert s.read_reply()[0] == 220
        s.ehlo(a_name)
        _, final = s.send_message("a@example.net", ["alice@example.com"], message("a-clean-1"))
        assert final[0] == 250, final
        _, final = s.send_message("a@example.net", ["alice@example.com"],
                                  message("a-spam", SPAM))
        assert final[0] == 550 and final[1][0].startswith("5.7.1"), final
        s.cmd("QUIT")
    t_refused = time.monotonic()
    assert len(log_lines(sl, r"client=%s PASS " % re.escape(a))) == 1
    assert wait_log(sl, r"client=%s CONTENTREFUSED 550 5\.7\.1" % re.escape(a), 5)
    time.sleep(0.5)  # the store's write batch

    # A's next connection: its pass is gone, CONTENT 3: shaped.
    quit_shaped(sl, a)
    lines = "\n".join(session_log(sl, a))
    assert re.search(r"CONTENT weight=3 score=3 from=client", lines), lines
    assert len(log_lines(sl, r"client=%s PASS " % re.escape(a))) == 1

    # B of the same /24: one refused neighbour counts for nothing.
    ehlo_s, code = deliver(sl, b, "b-clean", b_name)
    assert code == 250 and ehlo_s < 1.0, (code, ehlo_s)
    assert not log_lines(sl, r"client=%s (?:SHAPED|CONTENT)" % re.escape(b))

    # C refused too: two distinct refused addresses of the /24...
    ehlo_s, code = deliver(sl, c, "c-spam", c_name, body=SPAM)
    assert code == 550 and ehlo_s < 1.0, (code, ehlo_s)
    assert wait_log(sl, r"client=%s CONTENTREFUSED" % re.escape(c), 5)
    time.sleep(0.5)
    # ...and E, new, with a clean PTR, is shaped by its network's CONTENT.
    quit_shaped(sl, e)
    lines = "\n".join(session_log(sl, e))
    assert re.search(r"CONTENT weight=3 score=3 from=network", lines), lines
    assert not log_lines(sl, r"REJECT score=")  # one refusal each only shapes

    # Decay: a little over one half-life after A's refusal, A is clean.
    left = HALFLIFE_S * 1.15 - (time.monotonic() - t_refused)
    if left > 0:
        time.sleep(left)
    mark = len(sl.log())
    ehlo_s, code = deliver(sl, a, "a-clean-2", a_name)
    assert code == 250 and ehlo_s < 1.0, (code, ehlo_s)
    # This session's summary, not an earlier one: the log is written by
    # its own thread, after the client's replies.
    assert wait_log_after(sl, mark, r"client=%s .*outcome=" % re.escape(a))
    last = [l for l in sl.log()[mark:].splitlines() if "client=%s " % a in l]
    assert last and not [l for l in last if " SHAPED" in l or " CONTENT " in l], last
    got = pf.wait_messages(4, 20, lambda m: "clean" in (m.subject or ""))
    assert len(got) == 4, [m.subject for m in got]
    assert not [m for m in pf.messages() if "spam" in (m.subject or "")]
    assert_alive(sl)


# ------------------------------------- the production list configuration

PBL_ONLY = "127.0.0.111"  # zen: 127.0.0.10 (PBL) only, no PTR
ZEN_PRODUCTION = ("zen.spamhaus.org=127.0.0.[2;3;9]*8 zen.spamhaus.org=127.0.0.[4..7]*4 "
                  "zen.spamhaus.org=127.0.0.[10;11]*2 list.dnswl.org=127.0.[0..255].0*-2 "
                  "list.dnswl.org=127.0.[0..255].1*-4 list.dnswl.org=127.0.[0..255].[2;3]*-8")


@pytest.mark.deadline(120)
def test_verdicts_05_pbl_only_legitimate_server_delivered_first_try(workdir, postfix, sluice):
    """docs/classification.md's production configuration, with a local
    dnsmasq answering for zen.spamhaus.org: a real Postfix sender on a
    PBL-listed address without PTR (PBL 2 + NOPTR 1) is shaped, never
    refused, and its message is delivered on the first try."""
    zdns = harness.Dnsmasq(os.path.join(workdir, "zen-dns"), n_bulk=0,
                           zones=harness.Dnsmasq.ZONES + ("zen.spamhaus.org", "list.dnswl.org"),
                           extra=["host-record=111.0.0.127.zen.spamhaus.org,127.0.0.10"])
    zdns.write_config()
    zdns.start()
    try:
        pf = postfix()
        sl = sluice(pf, dns_servers="127.0.0.1:%d" % zdns.port, dnsbl_sites=ZEN_PRODUCTION,
                    shape_threshold=3, reject_threshold=8, greet_wait="1s",
                    shape_rate=50, shape_time="8s", shape_final_hold="8s")
        rc, out = sl.check_config()
        assert rc == 0 and "warning" not in out, out  # sluice -n: nothing to warn about
        # The README's old one-line ZEN entry with a low reject_threshold
        # is what the warning is for.
        bad = os.path.join(workdir, "bad.conf")
        with open(bad, "w") as f:
            f.write("dnsbl_sites = zen.spamhaus.org*3\nreject_threshold = 4\n")
        rc, out = sl.check_config(bad)
        assert rc == 0 and "can refuse a legitimate server listed only in the Spamhaus PBL" \
            in out, out
        sender = postfix(name="sender", master_extra=harness.SENDER_MASTER,
                         extra=harness.sender_extra(sl.host, sl.port, PBL_ONLY))
        tok = "pbl-%d" % os.getpid()
        msg = (b"From: <s@sender.test>\nTo: <alice@example.com>\nSubject: " + tok.encode()
               + b"\nMessage-ID: <" + tok.encode() + b"@sender.test>\n\nA small server.\n")
        r = subprocess.run(["sendmail", "-C", sender.config_dir, "-i", "-f", "s@sender.test",
                            "alice@example.com"], input=msg, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        assert r.returncode == 0, r.stdout
        got = pf.wait_messages(1, 60, lambda m: m.subject == tok)
        assert len(got) == 1, sender.maillog()[-3000:]
        assert harness.wait_until(lambda: "status=sent" in sender.maillog(), 10)
        assert "status=deferred" not in sender.maillog(), sender.maillog()[-3000:]
        lines = "\n".join(session_log(sl, PBL_ONLY))
        assert re.search(r"DNSBL weight=2 .*zen\.spamhaus\.org=127\.0\.0\.10\*2", lines), lines
        assert " SHAPED " in lines and " REJECT " not in lines, lines
        assert_alive(sl)
    finally:
        zdns.stop()
