"""
Fast lane scenarios (issue 8): a client that keeps up has its envelope
relayed live on one backend connection and its message sent on the same
one; a client that stalls, becomes shaped or whose lane is lost falls
back to the buffered path without losing mail.

Every test runs a real Postfix (XCLIENT for sluice's 127.0.0.1 only, so
each identified connection carries one client) and reads Postfix's own
per-connection counters ("disconnect from ... mail=1 rcpt=N data=1").
"""

import os
import random
import signal
import smtplib
import threading
import time
import uuid

import pytest

import harness
import postfix_counters
from postfix_counters import count
from harness import CLIENT23, SmtpRaw
from test_core import connect  # raw client, greeting read and required 220


def token(tag):
    return "lane-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok, body=b"Hello from the lane tests.\r\n"):
    t = tok.encode()
    return (b"From: <a@example.net>\r\nTo: <alice@example.com>\r\n"
            b"Subject: " + t + b"\r\nMessage-ID: <" + t + b"@example.net>\r\n"
            b"\r\n" + body)


def cmd(c, line):
    c.send(line.encode() + b"\r\n")
    return c.read_reply()


def envelope(c, *rcpts):
    """EHLO, MAIL and a RCPT per recipient, each accepted (one at a time:
    each on the lane when it is taken)."""
    lines = ["EHLO client23.example", "MAIL FROM:<a@example.net>"]
    for line in lines + ["RCPT TO:<%s>" % r for r in rcpts]:
        code, text = cmd(c, line)
        assert code == 250, "%s: %d %s" % (line, code, text)


def disconnects(pf, client=None):
    """Postfix's ended connections (postfix_counters.connections) whose
    client, as XCLIENT named it, is client (any when None)."""
    return [c for c in postfix_counters.connections(pf.maillog().splitlines())
            if client is None or c["client"] == client]


@pytest.mark.deadline(60)
def test_lane_a_fast_client_one_connection(postfix, sluice):
    """A fast client's message is one Postfix connection: mail=1, rcpt=N,
    bdat=1 (the message as one BDAT ... LAST: Postfix offers CHUNKING),
    no data, no rset; and the session summary counts it on the lane."""
    pf = postfix()
    sl = sluice(pf, pool=4, metrics_listen="127.0.0.1:%d" % harness.free_port())
    tok = token("a")
    with smtplib.SMTP(sl.host, sl.port, source_address=(CLIENT23, 0),
                      timeout=30) as s:
        s.ehlo("client23.example")
        refused = s.sendmail("a@example.net",
                             ["alice@example.com", "bob@example.com"],
                             message(tok))
        assert refused == {}
    pf.wait_messages(2)
    assert harness.wait_until(lambda: disconnects(pf, CLIENT23), 10)
    conns = disconnects(pf, CLIENT23)
    assert len(conns) == 1, conns
    c = conns[0]
    assert [count(c, n) for n in ("mail", "rcpt", "bdat", "data", "rset")] == [1, 2, 1, 0, 0], c
    assert sl.metric("sluice_lanes_total") >= 1
    assert harness.wait_until(lambda: "lane=1 lane_fallbacks=0" in sl.log(), 5)


def lane_log_count(pf, client):
    """Postfix connections that carried client and ended."""
    return len(disconnects(pf, client))


def metrics_port():
    return "127.0.0.1:%d" % harness.free_port()


def send_one(sl, tok):
    """One message from CLIENT23 through sluice: the code that refused it,
    or None when it was accepted."""
    try:
        with smtplib.SMTP(sl.host, sl.port, source_address=(CLIENT23, 0),
                          timeout=30) as s:
            s.ehlo("client23.example")
            s.sendmail("a@example.net", ["alice@example.com"], message(tok))
    except smtplib.SMTPRecipientsRefused as e:
        return min(code for code, _ in e.recipients.values())
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    return None


def ehlos(pf):
    """Postfix's EHLO count of each ended connection that carried
    CLIENT23, in the order they ended."""
    return [count(c, "ehlo") for c in disconnects(pf, CLIENT23)]


@pytest.mark.deadline(90)
def test_lane_k_greeting_only_once_the_server_is_known(postfix, sluice):
    """Once a connection's EHLO has shown XCLIENT, the next connections open
    with the greeting alone: XCLIENT comes first and Postfix counts one
    EHLO, the client's, instead of two. When the server stops allowing
    XCLIENT, the refusal costs that client a 4xx (never a delivery without
    its identity), sluice says once that it sends EHLO first from now on,
    and it does."""
    pf = postfix(allow_log=("insufficient authorization",))
    sl = sluice(pf, pool=1)
    for i in range(3):
        assert send_one(sl, token("k%d" % i)) is None
    pf.wait_messages(3)
    assert harness.wait_until(lambda: len(ehlos(pf)) == 3, 10)
    # The first connection was opened before anything was known.
    assert ehlos(pf) == [2, 1, 1], disconnects(pf, CLIENT23)

    pf.xclient_hosts = "127.0.0.2"  # no longer sluice's address
    pf.write_config()
    pf.restart()
    # The pool's connection again (it backs off while the server is away).
    assert harness.wait_until(lambda: pf.established() >= 1, 20)
    code = send_one(sl, token("k-refused"))
    assert code is not None and code // 100 == 4, code
    assert harness.wait_until(
        lambda: "every connection sends EHLO first from now on" in sl.log(), 10)

    pf.xclient_hosts = "127.0.0.1"
    pf.write_config()
    pf.restart()
    before = len(ehlos(pf))
    assert harness.wait_until(lambda: pf.established() >= 1, 20)
    tok = token("k-after")
    assert send_one(sl, tok) is None
    pf.wait_messages(1, pred=lambda m: m.subject == tok)
    assert harness.wait_until(lambda: len(ehlos(pf)) > before, 10)
    assert ehlos(pf)[-1] == 2, disconnects(pf, CLIENT23)
    assert not [m for m in pf.messages() if m.subject.startswith("lane-k-refused")]
    assert sl.log().count("sends EHLO first") == 1


@pytest.mark.deadline(60)
def test_lane_b_stall_falls_back_and_releases(postfix, sluice):
    """A client that stalls mid-envelope past fast_lane_gap falls back: the
    backend connection is given up during the stall (Postfix logs its end
    before the client goes on), and the message is still delivered to every
    recipient by the buffered path."""
    pf = postfix()
    sl = sluice(pf, pool=4, fast_lane_gap="200ms", metrics_listen=metrics_port())
    tok = token("b")
    c = connect(sl)
    envelope(c, "alice@example.com")
    # The stall: the lane's connection must end on the server's side now,
    # while the client says nothing.
    assert harness.wait_until(lambda: lane_log_count(pf, CLIENT23) == 1, 5), \
        "the lane was not given back during the stall"
    during = disconnects(pf, CLIENT23)[0]
    assert [count(during, n) for n in ("mail", "rcpt", "bdat", "data")] == [1, 1, 0, 0], during
    assert cmd(c, "RCPT TO:<bob@example.com>")[0] == 250
    assert cmd(c, "DATA")[0] == 354
    c.send(message(tok) + b".\r\n")
    code, text = c.read_reply()
    assert code == 250, text
    cmd(c, "QUIT")
    c.close()
    pf.wait_messages(2, pred=lambda m: m.subject == tok)
    assert sl.metric('sluice_lane_fallbacks_total{reason="stall"}') == 1
    assert "LANEFALLBACK reason=stall rcpt=1" in sl.log()
    assert harness.wait_until(lambda: "lane=0 lane_fallbacks=1" in sl.log(), 5)


@pytest.mark.deadline(60)
def test_lane_d_slow_body_delivered_by_replay(postfix, sluice):
    """A body slower than the server's smtpd_timeout (10s): the lane is
    given back at fast_lane_body_wait, well before the server would time
    it out, and the message goes by replay."""
    pf = postfix(extra={"smtpd_timeout": "10s"})
    sl = sluice(pf, pool=4, fast_lane_body_wait="2s", metrics_listen=metrics_port())
    tok = token("d")
    c = connect(sl)
    envelope(c, "alice@example.com")
    assert cmd(c, "DATA")[0] == 354
    msg = message(tok, body=b"".join(b"line %d of a slow body\r\n" % i
                                     for i in range(12)))
    lines = msg.split(b"\r\n")
    start = time.monotonic()
    for ln in lines[:-1]:
        c.send(ln + b"\r\n")
        time.sleep(12.0 / len(lines))
    assert time.monotonic() - start > 11
    c.send(b".\r\n")
    code, text = c.read_reply()
    assert code == 250, text
    cmd(c, "QUIT")
    c.close()
    pf.wait_messages(1, pred=lambda m: m.subject == tok)
    assert sl.metric('sluice_lane_fallbacks_total{reason="body_wait"}') == 1
    assert not [l for l in pf.maillog().splitlines()
                if "timeout after" in l and "[%s]" % CLIENT23 in l]


@pytest.mark.deadline(60)
def test_lane_e_refused_at_replay_gives_451(postfix, sluice):
    """Recipients accepted on the lane, then the client stalls (fallback)
    and the server refuses one at the replay: the client gets a 451 and
    nothing is delivered, to no recipient. The server's own refusal is
    real: Postfix's per-client recipient rate (anvil) lets two through
    and refuses the third."""
    pf = postfix(extra={"smtpd_client_recipient_rate_limit": "2",
                        "smtpd_client_event_limit_exceptions": ""})
    sl = sluice(pf, pool=4, fast_lane_gap="200ms", metrics_listen=metrics_port())
    tok = token("e")
    c = connect(sl)
    envelope(c, "alice@example.com", "bob@example.com")
    assert harness.wait_until(lambda: lane_log_count(pf, CLIENT23) == 1, 5)
    assert cmd(c, "DATA")[0] == 354
    c.send(message(tok) + b".\r\n")
    code, text = c.read_reply()
    assert code == 451, "%d %s" % (code, text)
    cmd(c, "QUIT")
    c.close()
    time.sleep(1)
    assert not [m for m in pf.messages() if m.subject == tok]
    assert sl.metric("sluice_lane_fallback_refused_total") == 1
    assert "Recipient address rate limit exceeded" in pf.maillog()


@pytest.mark.deadline(90)
def test_lane_c_late_dnsbl_shapes_replies_in_order(postfix, sluice):
    """A DNSBL answer that comes after MAIL, with three RCPTs pipelined and
    the first one owed on the lane, shapes the client: the lane's owed
    reply is relayed, then the lane falls back, and every reply reaches
    the client in order; the message is delivered by replay.

    The DNS server is a programmable one on loopback (test_hostile_ek's
    FakeDns): the PTR is answered at once, the DNSBL query's first attempt
    never, its retry after 0.3 s, so the answer lands after the greeting
    (which waits dns_timeout for it). Postfix sleeps 1 s on each RCPT
    (smtpd_recipient_restrictions = sleep 1), so the answer lands while a
    RCPT is owed on the lane."""
    from test_hostile_ek import FakeDns, dns_a, dns_rr
    fd = FakeDns()
    try:
        fd.name_ptr(CLIENT23, "client23.example", CLIENT23)
        seen = []

        def bl(q, qe, n, t):
            seen.append(t)
            if len(seen) == 1:
                return []  # the first attempt: no answer
            return [(0.3, fd.reply(q, qe, answers=[dns_rr(1, dns_a("127.0.0.2"))]))]
        fd.rules[b"23.0.0.127.bl.test"] = bl
        pf = postfix(extra={"smtpd_recipient_restrictions": "sleep 1"})
        sl = sluice(pf, pool=4, dns_servers="127.0.0.1:%d" % fd.port,
                    dns_timeout="1s", greet_wait="0s", dnsbl_sites="bl.test*3",
                    shape_rate="200", shape_final_hold="1s", shape_time="30s",
                    metrics_listen=metrics_port())
        tok = token("c")
        c = connect(sl)
        assert cmd(c, "EHLO client23.example")[0] == 250
        rcpts = ["alice@example.com", "bob@example.com", "carol@example.com"]
        c.send(b"MAIL FROM:<a@example.net>\r\n" +
               b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts))
        replies = [c.read_reply(timeout=30) for _ in range(4)]
        assert [r[0] for r in replies] == [250] * 4, replies
        # In order: MAIL's 2.1.0, then each RCPT's 2.1.5.
        assert "2.1.0" in " ".join(replies[0][1]), replies
        assert all("2.1.5" in " ".join(r[1]) for r in replies[1:]), replies
        assert cmd(c, "DATA")[0] == 354
        c.send(message(tok) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, text
        c.close()
        pf.wait_messages(3, pred=lambda m: m.subject == tok)
        log = sl.log()
        assert "DNSBL" in log
        assert "LANEFALLBACK reason=shaped" in log, log[-3000:]
        assert sl.metric('sluice_lane_fallbacks_total{reason="shaped"}') == 1
    finally:
        fd.stop()


POOL = 4
N_MIX = 300


@pytest.mark.deadline(150)
def test_lane_f_cap_holds_300_mixed_clients(postfix, sluice, workdir):
    """300 clients at once through a pool of 4: two thirds fast (lanes),
    the rest slow (pauses past fast_lane_gap: buffered or fallen back),
    and the 127.0.2.x ones shaped (deny file): the backend never sees more
    than 4 connections, every message is delivered once, lanes were used,
    and every shaped client's replay got through (lanes give way)."""
    deny = os.path.join(workdir, "deny.cidr")
    with open(deny, "w") as f:
        f.write("127.0.2.0/24\n")
    os.chmod(deny, 0o644)
    pf = postfix()
    sl = sluice(pf, pool=POOL, cidr_deny_file=deny, shape_rate="2000",
                shape_final_hold="1s", shape_time="20s",
                metrics_listen=metrics_port())
    addrs = harness.bulk_client_addrs(N_MIX)
    results, lock = {}, threading.Lock()

    def client(i, addr):
        rnd = random.Random(i)
        slow = i % 3 == 2
        tok = token("f%d" % i)

        def pause():
            if slow:
                time.sleep(rnd.uniform(0.3, 0.5))

        began = time.monotonic()
        try:
            with SmtpRaw(sl.host, sl.port, source=addr, timeout=90) as c:
                code, text = c.read_reply()
                if code != 220:
                    raise harness.SmtpError("greeting %d %s" % (code, text))
                c.ehlo(harness.bulk_client_name(addr))
                pause()
                c.expect("MAIL FROM:<s%d@example.net>" % i, 250)
                pause()
                c.expect("RCPT TO:<carol@example.com>", 250)
                pause()
                c.expect("RCPT TO:<dave@example.com>", 250)
                pause()
                c.expect("DATA", 354)
                c.send(message(tok) + b".\r\n")
                code, text = c.read_reply()
                try:
                    c.cmd("QUIT", timeout=10)
                except (OSError, harness.SmtpError):
                    pass
                res = (tok, code, text, time.monotonic() - began)
        except Exception as e:  # recorded, asserted below
            res = (tok, e, None, time.monotonic() - began)
        with lock:
            results[addr] = res

    peak = harness.run_clients(pf, addrs, client, 110)
    bad = {a: r for a, r in results.items() if r[1] != 250}
    assert not bad, "%d not accepted, e.g. %r" % (len(bad), list(bad.items())[:3])
    toks = {r[0] for r in results.values()}
    got = pf.wait_messages(2 * N_MIX, 60, lambda m: m.subject in toks)
    per = {}
    for m in got:
        per[m.subject] = per.get(m.subject, 0) + 1
    assert set(per) == toks and set(per.values()) == {2}, "lost or duplicated"
    assert peak[1] > 20, "connection poller barely ran"
    assert 0 < peak[0] <= POOL, "backend had %d connections (pool %d)" % (peak[0], POOL)
    shaped = [a for a in addrs if a.startswith("127.0.2.")]
    assert shaped and all(results[a][1] == 250 for a in shaped)
    lanes = sl.metric("sluice_lanes_total")
    print("lanes %d, peak %d, shaped %d, slowest shaped %.1f s" % (
        lanes, peak[0], len(shaped), max(results[a][3] for a in shaped)))
    assert lanes > 0


N_QUEUE = 9


@pytest.mark.deadline(90)
def test_lane_h_more_fast_clients_than_lanes_wait_their_turn(postfix, sluice):
    """Nine fast clients at once, lanes for three (pool 4, fast_lane_share
    75 %): a session that finds the lanes' share taken waits in line for a
    lane (within fast_lane_gap) instead of going the buffered way, so
    every message is still one Postfix connection, mail=1 data=1, no rset
    (the buffered way would show a recipient check's connection with
    rset=1 beside each of the others)."""
    pf = postfix()
    sl = sluice(pf, pool=4, fast_lane_gap="3s", metrics_listen=metrics_port())
    addrs = harness.bulk_client_addrs(N_QUEUE)
    results, lock = {}, threading.Lock()

    def client(i, addr):
        tok = token("h%d" % i)
        try:
            with SmtpRaw(sl.host, sl.port, source=addr, timeout=30) as c:
                code, text = c.read_reply()
                assert code == 220, text
                c.ehlo(harness.bulk_client_name(addr))
                c.expect("MAIL FROM:<h%d@example.net>" % i, 250)
                c.expect("RCPT TO:<carol@example.com>", 250)
                c.expect("DATA", 354)
                c.send(message(tok) + b".\r\n")
                res = (tok, c.read_reply()[0])
                c.cmd("QUIT", timeout=10)
        except Exception as e:  # recorded, asserted below
            res = (tok, e)
        with lock:
            results[addr] = res

    peak = harness.run_clients(pf, addrs, client, 60)
    assert all(r[1] == 250 for r in results.values()), results
    pf.wait_messages(N_QUEUE, 30, lambda m: m.subject.startswith("lane-h"))
    assert harness.wait_until(
        lambda: len([c for c in disconnects(pf) if count(c, "mail")]) >= N_QUEUE, 10)
    with_mail = [c for c in disconnects(pf) if count(c, "mail")]
    assert [(count(c, "mail"), count(c, "bdat"), count(c, "rset"))
            for c in with_mail] == [(1, 1, 0)] * N_QUEUE, with_mail
    assert peak[0] <= 4
    assert sl.metric("sluice_lanes_total") == N_QUEUE


@pytest.mark.deadline(60)
def test_lane_j_mail_waits_for_a_late_ptr_and_takes_the_lane(postfix, sluice, workdir):
    """An allow-listed client (greeted at once, without waiting for its
    look-ups) whose PTR answer comes 0.5 s after connect sends MAIL at
    once: MAIL waits for the PTR result (XCLIENT NAME needs it) and the
    transaction still takes a lane: one Postfix connection, mail=1 data=1,
    no rset, and the name Postfix was told is the PTR's."""
    from test_hostile_ek import FakeDns, dns_a, dns_enc, dns_rr
    allow = os.path.join(workdir, "allow.cidr")
    with open(allow, "w") as f:
        f.write("%s/32\n" % CLIENT23)
    os.chmod(allow, 0o644)
    fd = FakeDns()
    try:
        fd.ptr(CLIENT23, lambda q, qe, n, t: [(0.5, fd.reply(q, qe, answers=[
            dns_rr(12, dns_enc("client23.example"))]))] if t == 12 else None)
        fd.rules[b"client23.example"] = lambda q, qe, n, t: [
            (0, fd.reply(q, qe, answers=[dns_rr(1, dns_a(CLIENT23))]))] if t == 1 else None
        pf = postfix()
        sl = sluice(pf, pool=4, dns_servers="127.0.0.1:%d" % fd.port,
                    dns_timeout="3s", cidr_allow_file=allow,
                    metrics_listen=metrics_port())
        tok = token("j")
        c = connect(sl)
        assert cmd(c, "EHLO client23.example")[0] == 250
        began = time.monotonic()
        assert cmd(c, "MAIL FROM:<a@example.net>")[0] == 250
        waited = time.monotonic() - began
        assert cmd(c, "RCPT TO:<alice@example.com>")[0] == 250
        assert cmd(c, "DATA")[0] == 354
        c.send(message(tok) + b".\r\n")
        assert c.read_reply(timeout=30)[0] == 250
        cmd(c, "QUIT")
        c.close()
        pf.wait_messages(1, pred=lambda m: m.subject == tok)
        assert harness.wait_until(lambda: disconnects(pf, CLIENT23), 10)
        conns = disconnects(pf, CLIENT23)
        assert [(count(x, "mail"), count(x, "bdat"), count(x, "rset"))
                for x in conns] == [(1, 1, 0)], conns
        assert sl.metric("sluice_lanes_total") == 1
        assert "client23.example[%s]" % CLIENT23 in pf.maillog()
        assert waited >= 0.3, "MAIL answered %.2f s in: the PTR was in already" % waited
    finally:
        fd.stop()


@pytest.mark.deadline(60)
def test_lane_i_quiet_lane_gives_way_to_a_recipient_check(postfix, sluice, workdir):
    """Pool of one, held by a fast client's lane that then goes quiet (past
    half of fast_lane_gap, within it): a shaped client's recipient check
    waits in line, so the quiet lane gives its connection back ("wanted")
    and the check gets through at once; the fast client's message still
    goes, the buffered way."""
    deny = os.path.join(workdir, "deny.cidr")
    with open(deny, "w") as f:
        f.write("127.0.2.0/24\n")
    os.chmod(deny, 0o644)
    pf = postfix()
    sl = sluice(pf, pool=1, fast_lane_gap="3s", cidr_deny_file=deny,
                shape_rate="2000", shape_time="1s", shape_final_hold="1s",
                metrics_listen=metrics_port())
    fast, shaped = harness.bulk_client_addrs(1)[0], "127.0.2.7"
    tok_a, tok_b = token("ia"), token("ib")
    with SmtpRaw(sl.host, sl.port, source=fast, timeout=30) as a:
        assert a.read_reply()[0] == 220
        a.ehlo(harness.bulk_client_name(fast))
        a.expect("MAIL FROM:<ia@example.net>", 250)
        a.expect("RCPT TO:<carol@example.com>", 250)
        assert sl.metric("sluice_lanes") == 1
        time.sleep(1.7)  # quiet: past half of the gap, within it
        with SmtpRaw(sl.host, sl.port, source=shaped, timeout=30) as b:
            assert b.read_reply()[0] == 220
            b.ehlo("shaped.example")
            b.expect("MAIL FROM:<ib@example.net>", 250)
            began = time.monotonic()
            b.expect("RCPT TO:<dave@example.com>", 250)
            waited = time.monotonic() - began
            assert waited < 1.0, "the check waited %.1f s for the lane" % waited
            b.expect("DATA", 354)
            b.send(message(tok_b) + b".\r\n")
            assert b.read_reply()[0] == 250
        a.expect("DATA", 354)
        a.send(message(tok_a) + b".\r\n")
        assert a.read_reply()[0] == 250
    got = pf.wait_messages(2, 20, lambda m: m.subject in (tok_a, tok_b))
    assert sorted(m.subject for m in got) == sorted([tok_a, tok_b])
    assert sl.metric('sluice_lane_fallbacks_total{reason="wanted"}') == 1


# ---------------------------------------------------- the lane's fault matrix
# The evil backend (evil_backend.py, the fault matrix's Postfix look-alike)
# with one fault at one stage of the lane's exchange: XCLIENT, the EHLO
# after it, MAIL, RCPT 1 and 2, DATA, mid-body, after the dot. Whatever
# happens, goal G4 holds (check_invariants: no loss, nothing altered or
# incomplete delivered, no 5xx the server did not send, every reply within
# its bound, no RFC 2920 or XCLIENT violation, sluice alive), and the
# pool recovers.

from evil_backend import (Fault, check_invariants, deliver_after_recovery,  # noqa: E402,F401
                          evil, run_txn)

LANE_FAST = dict(backend_timeout="1s", backend_data_timeout="1500ms",
                 backend_connect_timeout="1s", checkout_timeout="2s",
                 smtpd_timeout="5s", shutdown_timeout="1s",
                 shape_threshold="1000000")
LANE_STAGES = [("xclient", None), ("ehlo2", None), ("mail", None),
               ("rcpt", 1), ("rcpt", 2), ("data", None), ("mid_body", None),
               ("after_dot", None)]
LANE_KINDS = [("close", None), ("reply", "421 4.7.0 pf.evil.test Error: too many errors"),
              ("reply", "451 4.3.0 Error: injected"), ("extra", None),
              ("slow", 2.0), ("garbage", None)]
LANE_CASES = [pytest.param(st, k, kind, arg, pipe,
                           id="%s%s-%s%s%s" % (st, k or "", kind,
                                               arg[:3] if isinstance(arg, str) else "",
                                               "-pipe" if pipe else ""))
              for st, k in LANE_STAGES for kind, arg in LANE_KINDS
              for pipe in ((False, True) if st == "rcpt" else (False,))]


@pytest.mark.deadline(30)
@pytest.mark.parametrize("stage,k,kind,arg,pipelined", LANE_CASES)
def test_lane_fault_matrix(evil, sluice, stage, k, kind, arg, pipelined):
    be = evil(faults=[Fault(stage, kind, arg, k=k, times=1)])
    sl = sluice(be, pool=2, **LANE_FAST)
    time.sleep(0.15)
    res = run_txn(sl, token("fm"), rcpts=("alice@example.com", "bob@example.com"),
                  pipelined=pipelined, timeout=8)
    problems = check_invariants(be, sl, [res], 3.5, allow_dup=True)
    be.clear_faults()
    rec, tries = deliver_after_recovery(be, sl, window=6.0)
    if not rec.accepted or be.count(rec.tok) != 1:
        problems.append("pool did not recover within 6 s (%d tries): %r" % (tries, rec))
    assert harness.wait_until(lambda: "lane=1 " in sl.log(), 5), "no message went on a lane"
    assert not problems, "\n".join(problems) + "\n" + repr(res) + "\n" + be.summary()


@pytest.mark.deadline(60)
def test_lane_g_drain_waits_for_the_lane_answer(postfix, sluice):
    """SIGTERM while a message is on a lane and the server is still
    answering it (smtpd_end_of_data_restrictions = sleep 3): the client
    gets the server's 250 first, then the 421; the lane's connection is
    not released before the server's answer."""
    pf = postfix(extra={"smtpd_end_of_data_restrictions": "sleep 3"})
    sl = sluice(pf, workers=1, shutdown_timeout="10s")
    busy = connect(sl)
    envelope(busy, "alice@example.com")
    assert cmd(busy, "DATA")[0] == 354
    tok = token("g")
    busy.send(message(tok) + b".\r\n")
    time.sleep(1.0)
    assert busy.pending(0.05) == b"", "end of data answered before the sleep"
    os.kill(sl.proc.pid, signal.SIGTERM)
    code, text = busy.read_reply(timeout=15)
    assert code == 250, "lane message during drain: %d %s" % (code, text)
    code2, text2 = busy.read_reply(timeout=5)
    assert code2 == 421, (code2, text2)
    pf.wait_messages(1, pred=lambda m: m.subject == tok)
    assert "lane=1 " in sl.log()
