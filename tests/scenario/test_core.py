"""
Core scenarios: sluice between real clients and a real Postfix.

Every test starts its own Postfix (harness.Postfix: virtual delivery to
maildirs for example.com, XCLIENT from 127.0.0.1 unless said otherwise,
smtpd_forbid_unauth_pipelining = yes, smtpd_forbid_bare_newline = reject)
and its own sluice; DNS is one dnsmasq for the session, where 127.0.0.23 is
client23.example (forward-confirmed) and 127.0.1.x / 127.0.2.x are
hB-C.clients.example.

test_core_00 checks the harness alone (no sluice). The last test checks all
backend logs for lines that show sluice broke Postfix's rules.
"""

import os
import random
import smtplib
import threading
import time
import uuid

import pytest

import harness
from harness import CLIENT23, CLIENT23_NAME, SmtpRaw, dot_stuff, crlf_to_lf

POSTFIX_UNKNOWN_USER = ("5.1.1 <%s>: Recipient address rejected: "
                        "User unknown in virtual mailbox table")


# ------------------------------------------------------------------ helpers

def token(tag):
    return "scn-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok, body=b"Hello from the scenario tests.\r\n",
            to=b"alice@example.com"):
    """A complete RFC 5322 message (CRLF lines) whose Subject is tok."""
    t = tok.encode()
    return (b"From: Scenario <a@example.net>\r\n"
            b"To: <" + to + b">\r\n"
            b"Subject: " + t + b"\r\n"
            b"Date: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            b"Message-ID: <" + t + b"@example.net>\r\n"
            b"\r\n" + body)


def connect(sl, source=CLIENT23, timeout=30):
    """Raw client to sluice from source; greeting read and required 220."""
    c = SmtpRaw(sl.host, sl.port, source=source, timeout=timeout)
    code, text = c.read_reply()
    assert code == 220, "greeting %d %s" % (code, text)
    return c


def received_of(m):
    return m.get_all("Received")


def by_subject(pf, tok):
    return [m for m in pf.messages() if m.subject == tok]


def assert_alive(sl):
    assert sl.alive(), "sluice exited during the test; log:\n" + sl.log()[-4000:]
    crashed = [l for l in sl.log().splitlines() if "killed by signal" in l]
    assert not crashed, "a sluice worker crashed:\n" + "\n".join(crashed)


# ----------------------------------------------------------------- 00 harness

@pytest.mark.deadline(60)
def test_core_00_backend_and_dns_sanity(postfix, dns):
    """No sluice: the backend and DNS behave as the other tests assume."""
    assert dns.query(CLIENT23, "PTR") == (0, [CLIENT23_NAME])
    assert dns.query(CLIENT23_NAME, "A") == (0, [CLIENT23])
    assert dns.query("127.0.0.66", "PTR")[0] == 3  # NXDOMAIN
    assert dns.query("127.0.1.7", "PTR") == (0, ["h1-7.clients.example"])
    assert dns.query("no-such-host.example", "A")[0] == 3
    assert dns.query("2.0.0.127.bl.test", "A") == (0, ["127.0.0.2"])

    # this backend provokes "insufficient authorization" itself, below
    pf = postfix(allow_log=("insufficient authorization",))
    tok = token("sanity")
    with SmtpRaw("127.0.0.1", pf.port) as c:
        assert c.read_reply()[0] == 220
        assert any(l.startswith("XCLIENT") for l in c.ehlo("sluice.test"))
        assert pf.established() == 1
        assert c.cmd("XCLIENT ADDR=%s NAME=%s HELO=%s PROTO=ESMTP"
                     % (CLIENT23, CLIENT23_NAME, CLIENT23_NAME))[0] == 220
        c.ehlo(CLIENT23_NAME)
        rr, final = c.send_message(
            "a@example.net",
            ["alice@example.com", "nobody@example.com", "bob@example.com"],
            dot_stuff(message(tok)))
        assert rr[1] == (550, [POSTFIX_UNKNOWN_USER % "nobody@example.com"])
        assert final[0] == 250
        # One identity per connection with xclient_hosts = 127.0.0.1.
        assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("XCLIENT ADDR=127.0.0.24")
        assert code == 550 and "insufficient authorization" in text[0]
    got = pf.wait_messages(2, 10, lambda m: m.subject == tok)
    assert sorted(m.user for m in got) == ["alice", "bob"]
    assert ("from client23.example (client23.example [127.0.0.23])"
            in received_of(got[0])[0])
    assert harness.wait_until(lambda: pf.established() == 0, 5)
    pf.stop()
    assert not pf.running()
    pf.start()  # same port again; start() waits for the 220 greeting
    # master logs through postlogd, a moment after it accepts connections
    assert harness.wait_until(lambda: pf.maillog().count("daemon started") == 2, 10), \
        pf.maillog()[-2000:]


# ----------------------------------------------------------- 01 byte exact

BODY_01 = (b"Plain first line.\r\n"
           b".one leading dot\r\n"
           b"..two leading dots\r\n"
           b".\r\n"
           b"...\r\n"
           b"\r\n"
           b"8-bit: caf\xc3\xa9 \xe2\x82\xac \xff\xfe\x80 latin1 \xe9t\xe9\r\n"
           b"trailing white space \t \r\n"
           b"From the start of a line\r\n"
           + b"x" * 900 + b"\r\n"
           b". \r\n"
           b"last line\r\n")


@pytest.mark.deadline(60)
def test_core_01_delivery_byte_for_byte(postfix, sluice):
    pf = postfix()
    sl = sluice(pf)
    tok = token("01")
    msg = message(tok, BODY_01)
    with connect(sl) as c:
        ext = c.ehlo(CLIENT23_NAME)
        assert "8BITMIME" in ext, ext
        assert "PIPELINING" in ext, ext
        c.expect("MAIL FROM:<a@example.net> BODY=8BITMIME", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        c.send(dot_stuff(msg) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, text
        assert c.cmd("QUIT")[0] == 221
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1, pf.messages()
    m = got[0]
    want = crlf_to_lf(msg)
    assert m.raw.endswith(want), "delivered bytes differ:\n%r\n---want---\n%r" % (m.raw, want)
    added = harness.Message("alice", "-", m.raw[:len(m.raw) - len(want)])
    assert [n for n, _ in added.headers] == [
        "Return-Path", "X-Original-To", "Delivered-To", "Received"], added.headers
    rcv = added.get("Received")
    assert rcv.startswith("from client23.example (client23.example [127.0.0.23])"), rcv
    assert "by pf.test (Postfix) with ESMTP" in rcv, rcv
    assert "sluice" not in rcv and "127.0.0.1" not in rcv, rcv
    assert_alive(sl)


# ------------------------------------------------------ 02 unknown recipient

@pytest.mark.deadline(60)
def test_core_02_unknown_recipient_gets_postfix_550(postfix, sluice):
    pf = postfix()
    sl = sluice(pf)
    tok = token("02")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        assert c.cmd("RCPT TO:<alice@example.com>")[0] == 250
        code, text = c.cmd("RCPT TO:<nobody@example.com>")
        assert (code, text) == (550, [POSTFIX_UNKNOWN_USER % "nobody@example.com"])
        assert c.cmd("RCPT TO:<bob@example.com>")[0] == 250
        c.expect("DATA", 354)
        c.send(dot_stuff(message(tok)) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, text
        c.cmd("QUIT")
    got = pf.wait_messages(2, 15, lambda m: m.subject == tok)
    assert sorted(m.user for m in got) == ["alice", "bob"]
    time.sleep(0.5)
    assert sorted(m.user for m in by_subject(pf, tok)) == ["alice", "bob"]
    assert "User unknown in virtual mailbox table" in pf.maillog()
    assert_alive(sl)


# ------------------------------------------------------ 03/04 many clients

N_BULK = 300
POOL = 4


def _bulk(pf, sl, n, deadline_s):
    """n clients from distinct addresses, each pausing 50-200 ms between
    commands. Returns (addrs, results {addr: (token, final code |
    exception, text)}, peak) where peak = [confirmed max of backend
    connections open at once, samples, raw max of single walks]."""
    addrs = harness.bulk_client_addrs(n)
    results = {}
    lock = threading.Lock()

    def client(i, addr):
        rnd = random.Random(i)
        tok = token("bulk%d" % i)
        name = harness.bulk_client_name(addr)

        def pause():
            time.sleep(rnd.uniform(0.05, 0.2))

        try:
            with SmtpRaw(sl.host, sl.port, source=addr, timeout=90) as c:
                code, text = c.read_reply()
                if code != 220:
                    raise harness.SmtpError("greeting %d %s" % (code, text))
                pause()
                c.ehlo(name)
                pause()
                c.expect("MAIL FROM:<s%d@example.net>" % i, 250)
                pause()
                c.expect("RCPT TO:<carol@example.com>", 250)
                pause()
                c.expect("DATA", 354)
                pause()
                c.send(dot_stuff(message(tok, to=b"carol@example.com")) + b".\r\n")
                code, text = c.read_reply()
                pause()
                try:
                    c.cmd("QUIT", timeout=10)
                except (OSError, harness.SmtpError):
                    pass
                res = (tok, code, text)
        except Exception as e:  # recorded, asserted below
            res = (tok, e, None)
        with lock:
            results[addr] = res

    peak = harness.run_clients(pf, addrs, client, deadline_s)
    return addrs, results, peak


def _log_concurrency(maillog):
    """Peak of smtpd 'connect from' minus 'disconnect from' in log order
    (informational: log order is only roughly event order)."""
    cur = peak = 0
    for line in maillog.splitlines():
        if "postfix/smtpd[" not in line:
            continue
        if ": connect from " in line:
            cur += 1
            peak = max(peak, cur)
        elif ": disconnect from " in line:
            cur = max(0, cur - 1)
    return peak


def _check_bulk(pf, sl, addrs, results, peak, check_names):
    bad = {a: r for a, r in results.items() if r[1] != 250}
    assert len(results) == len(addrs)
    assert not bad, "%d of %d clients not accepted, e.g. %r" % (
        len(bad), len(addrs), list(bad.items())[:5])
    toks = {r[0]: a for a, r in results.items()}
    got = pf.wait_messages(len(addrs), 60, lambda m: m.subject in toks)
    seen = {}
    for m in got:
        seen.setdefault(m.subject, []).append(m)
    missing = set(toks) - set(seen)
    assert not missing, "%d accepted messages not delivered" % len(missing)
    dup = [t for t, ms in seen.items() if len(ms) != 1]
    assert not dup, "delivered more than once: %r" % dup[:5]
    for t, (m,) in seen.items():
        addr = toks[t]
        rcv = received_of(m)[0]
        assert "[%s]" % addr in rcv, (addr, rcv)
        if check_names:
            name = harness.bulk_client_name(addr)
            assert rcv.startswith("from %s (%s [%s])" % (name, name, addr)), rcv
    print("backend connections open at once: confirmed peak %d, single-walk "
          "peak %d, over %d samples; log-order peak %d; backend sessions %d"
          % (peak[0], peak[2], peak[1], _log_concurrency(pf.maillog()),
             pf.maillog().count(": connect from ")))
    assert peak[1] > 20, "connection poller barely ran"
    assert 0 < peak[0] <= POOL, "backend had %d connections (pool %d)" % (peak[0], POOL)
    assert_alive(sl)


@pytest.mark.deadline(150)
def test_core_03_300_clients_through_pool_of_4_xclient_everyone(postfix, sluice):
    pf = postfix(xclient_hosts="127.0.0.0/8")
    sl = sluice(pf, pool=POOL)
    addrs, results, peak = _bulk(pf, sl, N_BULK, 120)
    _check_bulk(pf, sl, addrs, results, peak, check_names=True)


@pytest.mark.deadline(150)
def test_core_04_300_clients_through_pool_of_4_xclient_only_127_0_0_1(postfix, sluice):
    pf = postfix(xclient_hosts="127.0.0.1")
    sl = sluice(pf, pool=POOL)
    addrs, results, peak = _bulk(pf, sl, N_BULK, 120)
    _check_bulk(pf, sl, addrs, results, peak, check_names=True)


# --------------------------------------------------------- 05 backend down

@pytest.mark.deadline(120)
def test_core_05_backend_down_gives_4xx_and_recovers(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, backend_timeout="10s", checkout_timeout="10s")
    refused = []  # tokens answered 4xx: must never be delivered

    # Warm up: one delivery so the pool is in use before the fault.
    tok = token("05warm")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok)))
        assert final[0] == 250, final
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)

    # (a) backend stopped while the client sends the body.
    tok = token("05data")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        data = dot_stuff(message(tok, b"first half\r\n" * 50 + b"second half\r\n" * 50))
        half = len(data) // 2
        c.send(data[:half])
        pf.stop()
        assert not pf.running()
        c.send(data[half:] + b".\r\n")
        code, text = c.read_reply(timeout=40)
        refused.append(tok)
        assert 400 <= code < 500, "end of data with backend down: %d %s" % (code, text)

    # (b) backend down: RCPT is answered 4xx (never 2xx, never 5xx).
    # bob has not been asked about yet, so no cached answer can apply.
    tok = token("05rcpt")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        code, text = c.cmd("MAIL FROM:<a@example.net>", timeout=40)
        assert code == 250 or 400 <= code < 500, (code, text)
        if code == 250:
            code, text = c.cmd("RCPT TO:<bob@example.com>", timeout=40)
            assert 400 <= code < 500, "RCPT with backend down: %d %s" % (code, text)
        refused.append(tok)

    # (c) backend back: delivery resumes within a bounded wait.
    pf.start()
    restarted = time.monotonic()
    delivered_tok = None
    attempts = 0
    while time.monotonic() - restarted < 20 and attempts < 40:
        attempts += 1
        tok = token("05again")
        try:
            with SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=30) as c:
                code, text = c.read_reply()
                if code == 220:
                    c.ehlo(CLIENT23_NAME)
                    code, text = c.cmd("MAIL FROM:<a@example.net>")
                if code == 250:
                    code, text = c.cmd("RCPT TO:<alice@example.com>")
                if code == 250:
                    c.expect("DATA", 354)
                    c.send(dot_stuff(message(tok)) + b".\r\n")
                    code, text = c.read_reply(timeout=30)
                if code == 250:
                    delivered_tok = tok
                    break
                assert 400 <= code < 500, "after restart: %d %s" % (code, text)
                refused.append(tok)
        except (OSError, harness.SmtpError) as e:
            refused.append(tok)
            print("attempt %d: %r" % (attempts, e))
        time.sleep(0.5)
    took = time.monotonic() - restarted
    assert delivered_tok, "no delivery within %.1f s after the backend restart" % took
    assert took <= 15, "delivery resumed only after %.1f s" % took
    assert pf.wait_messages(1, 15, lambda m: m.subject == delivered_tok)
    time.sleep(2)  # let anything wrongly queued reach a mailbox
    leaked = [m for m in pf.messages() if m.subject in refused]
    assert not leaked, "answered 4xx but delivered: %r" % leaked
    assert_alive(sl)


# ------------------------------------------------------ 06 identity spoofing

@pytest.mark.deadline(60)
def test_core_06_client_xclient_xforward_proxy_refused(postfix, sluice):
    pf = postfix()
    sl = sluice(pf)
    toks = []
    with connect(sl) as c:
        ext = c.ehlo(CLIENT23_NAME)
        assert not any(e.startswith(("XCLIENT", "XFORWARD")) for e in ext), ext
        for line in ("XCLIENT ADDR=1.2.3.4", "XCLIENT ADDR=1.2.3.4 NAME=spoof.example",
                     "XFORWARD ADDR=1.2.3.4", "XFORWARD NAME=spoof.example ADDR=1.2.3.4"):
            code, text = c.cmd(line)
            assert 500 <= code < 600, "%s -> %d %s" % (line, code, text)
        tok = token("06a")
        toks.append(tok)
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok)))
        assert final[0] == 250, final
    # A PROXY protocol header line (sent as the first command).
    with connect(sl) as c:
        code, text = c.cmd("PROXY TCP4 1.2.3.4 127.0.0.1 56324 25")
        assert 500 <= code < 600, "PROXY -> %d %s" % (code, text)
        c.ehlo(CLIENT23_NAME)
        tok = token("06b")
        toks.append(tok)
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok)))
        assert final[0] == 250, final
    got = pf.wait_messages(2, 15, lambda m: m.subject in toks)
    assert len(got) == 2
    for m in got:
        rcv = received_of(m)[0]
        assert rcv.startswith("from client23.example (client23.example [127.0.0.23])"), rcv
        assert "1.2.3.4" not in m.raw.decode("latin-1")
    log = pf.maillog()
    assert "1.2.3.4" not in log and "spoof.example" not in log
    assert_alive(sl)


# ------------------------------------------------------------- 07 STARTTLS

@pytest.mark.deadline(60)
def test_core_07_starttls_delivery(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, tls=True)
    ctx = harness.unverified_tls_context()

    tok = token("07tls")
    s = smtplib.SMTP(sl.host, sl.port, local_hostname=CLIENT23_NAME,
                     source_address=(CLIENT23, 0), timeout=30)
    try:
        s.ehlo()
        assert s.has_extn("starttls"), s.esmtp_features
        code, _ = s.starttls(context=ctx)
        assert code == 220
        s.ehlo()
        assert not s.has_extn("starttls")
        refused = s.sendmail("a@example.net", ["alice@example.com"], message(tok))
        assert refused == {}
        assert s.docmd("QUIT")[0] == 221
    finally:
        s.close()
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1
    assert ("from client23.example (client23.example [127.0.0.23])"
            in received_of(got[0])[0])
    assert_alive(sl)


@pytest.mark.deadline(60)
def test_core_07_starttls_pipelined_rset_discarded(postfix, sluice):
    """"STARTTLS\r\nRSET\r\n" in one segment: 220 for STARTTLS, and the
    plaintext RSET is never answered, neither before nor after TLS."""
    pf = postfix()
    sl = sluice(pf, tls=True)
    ctx = harness.unverified_tls_context()
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.send(b"STARTTLS\r\nRSET\r\n")
        code, text = c.read_reply()
        assert code == 220, "STARTTLS -> %d %s" % (code, text)
        early = c.pending(0.5)
        assert early == b"", "plaintext after the STARTTLS reply: %r" % early
        c.starttls(ctx)
        c.send(b"EHLO " + CLIENT23_NAME.encode() + b"\r\n")
        code, lines = c.read_reply()
        assert code == 250 and len(lines) > 1, \
            "first reply over TLS is not the EHLO reply: %d %r" % (code, lines)
        assert lines[0].startswith(harness.SLUICE_HOSTNAME), lines
        extra = c.pending(0.5)
        assert extra == b"", "unexpected reply over TLS: %r" % extra
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("QUIT")[0] == 221
    assert_alive(sl)


# ------------------------------------------------------------ 08 pipelining

@pytest.mark.deadline(60)
def test_core_08_pipelined_envelope_in_one_segment(postfix, sluice):
    pf = postfix()
    sl = sluice(pf)
    tok = token("08")
    with connect(sl) as c:
        assert "PIPELINING" in c.ehlo(CLIENT23_NAME)
        c.send(b"MAIL FROM:<a@example.net>\r\n"
               b"RCPT TO:<alice@example.com>\r\n"
               b"RCPT TO:<bob@example.com>\r\n"
               b"DATA\r\n")
        codes = [c.read_reply(timeout=30)[0] for _ in range(4)]
        assert codes == [250, 250, 250, 354], codes
        c.send(dot_stuff(message(tok)) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, text
        assert c.pending(0.3) == b""
        assert c.cmd("QUIT")[0] == 221
    got = pf.wait_messages(2, 15, lambda m: m.subject == tok)
    assert sorted(m.user for m in got) == ["alice", "bob"]
    assert_alive(sl)


# ---------------------------------------------------------- config check

@pytest.mark.deadline(60)
def test_core_config_check(workdir, sluice_settings):
    binary = harness.sluice_bin()
    if not os.access(binary, os.X_OK):
        pytest.fail("sluice binary %s is missing or not executable: build it "
                    "(make sluice) or set SLUICE_BIN" % binary, pytrace=False)
    s = sluice_settings(pool=3)
    good = harness.Sluice(os.path.join(workdir, "good"), s)
    good.write_config()
    rc, out = good.check_config()
    assert rc == 0, out
    assert "backend_pool_size = 3" in out, out
    assert "listen = %s" % s["listen"] in out, out
    assert "workers = 1" in out, out
    # backend_xclient = yes is the default: not printed
    assert "backend_xclient" not in out, out

    bad = os.path.join(workdir, "bad.conf")
    with open(bad, "w") as f:
        f.write("# a comment\nlisten = 127.0.0.1:2525\nno_such_setting = 1\n")
    rc, out = good.check_config(bad)
    assert rc == 1, out
    assert "%s:3:" % bad in out, out


# ---------------------------------------------------- backend log, at end

def test_core_99_postfix_logs_clean(postfix_log_findings):
    """Zero backend log lines showing that sluice broke Postfix's rules
    (docs/hostile.md G7), over every backend the tests above started."""
    assert not postfix_log_findings, "\n".join(
        "%s: %s" % f for f in postfix_log_findings)
