"""
Shaping scenarios: sluice classifies clients (DNSBL/DNSWL, pre-greeting
talk, ...) and slows the suspicious ones to shape_rate bytes per second,
in front of a real Postfix.

DNS is the session's dnsmasq (harness.Dnsmasq): bl.test lists 127.0.0.2,
127.0.0.99 (BLOCKLISTED) and 127.0.0.97 (BLOCKLISTED2); wl.test lists
127.0.0.2 and 127.0.0.98. None of those has a PTR (NOPTR, weight 1);
127.0.0.23 is client23.example, forward-confirmed. With
dnsbl_sites = bl.test*3 wl.test*-5 a listed client scores 3 + 1 (NOPTR),
a client on both lists 3 - 5 + 1.

Timing is measured by the client: every received byte gets the time of
the recv() that returned it, and a rate is the bytes after the first
byte over the time from the first byte to the last. Bounds are loose
enough for a loaded two-core machine and tight enough to fail when
shaping is off (a burst arrives at thousands of bytes per second) or
applied twice.

Every wait is bounded in time, every loop in count and time.
"""

import fcntl
import http.client
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest

import harness
from harness import (BLOCKLISTED, BLOCKLISTED2, CLIENT23, CLIENT23_NAME,
                     SmtpRaw, dot_stuff)

BOTH_LISTS = "127.0.0.2"  # in bl.test and in wl.test
DNSBL_SITES = "bl.test*3 wl.test*-5"
RATE = 5
SIOCOUTQ = 0x5411  # termios.TIOCOUTQ: unsent + unacknowledged bytes
PHASES = ("greeting", "helo", "mail", "rcpt", "data", "end")


# ------------------------------------------------------------------ helpers

def shaping(**kw):
    """sluice settings for a shaping test; kw overrides."""
    s = {
        "dnsbl_sites": DNSBL_SITES,
        "greet_wait": "2s",
        "shape_threshold": "3",
        "shape_rate": str(RATE),
        "shape_time": "90s",
    }
    s.update({k: str(v) for k, v in kw.items()})
    return s


def token(tag):
    return "shp-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok, body=b"Hello from the shaping tests.\r\n",
            to=b"alice@example.com"):
    t = tok.encode()
    return (b"From: Shaping <a@example.net>\r\n"
            b"To: <" + to + b">\r\n"
            b"Subject: " + t + b"\r\n"
            b"Date: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            b"Message-ID: <" + t + b"@example.net>\r\n"
            b"\r\n" + body)


class TimedClient:
    """Raw TCP client bound to source that keeps the arrival time of every
    received byte (the time its recv() returned)."""

    def __init__(self, sl, source, timeout=30, sndbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf:
            try:  # as root: past net.core.wmem_max
                self.sock.setsockopt(socket.SOL_SOCKET, 32, sndbuf)  # SO_SNDBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.t_connect = time.monotonic()
        self.sock.connect((sl.host, sl.port))
        self.data = bytearray()
        self.times = []
        self.pos = 0
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, b):
        self.sock.sendall(b.encode() if isinstance(b, str) else b)

    def _recv(self, deadline):
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise socket.timeout("timed out; have %r" % bytes(self.data[self.pos:])[-200:])
        self.sock.settimeout(rem)
        d = self.sock.recv(65536)
        t = time.monotonic()
        if not d:
            self.eof = True
            raise harness.SmtpError("connection closed; unparsed %r"
                                    % bytes(self.data[self.pos:]))
        self.data += d
        self.times += [t] * len(d)

    def read_line(self, timeout):
        """(line bytes, index of its first byte, index after its end)."""
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            i = self.data.find(b"\n", self.pos)
            if i >= 0:
                start, self.pos = self.pos, i + 1
                return bytes(self.data[start:self.pos]), start, self.pos
            self._recv(deadline)
        raise harness.SmtpError("no line")

    def read_reply(self, timeout):
        """(code, [text lines], start index, end index) of one reply."""
        deadline = time.monotonic() + timeout
        start, lines = self.pos, []
        for _ in range(200):
            line, _, _ = self.read_line(max(0.01, deadline - time.monotonic()))
            s = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
            assert len(s) >= 3 and s[:3].isdigit(), "malformed reply line %r" % s
            lines.append(s[4:])
            if len(s) == 3 or s[3] == " ":
                return int(s[:3]), lines, start, self.pos
        raise harness.SmtpError("reply too long")

    def rate(self, start, end):
        """Bytes per second over data[start:end], after its first byte."""
        dt = self.times[end - 1] - self.times[start]
        n = end - start - 1
        return n / dt if dt > 0 else float("inf")

    def arrival(self, i):
        """Seconds from connect() to the arrival of byte i."""
        return self.times[i] - self.t_connect

    def drain(self, until):
        """Collect what arrives until monotonic time `until`; False on EOF."""
        for _ in range(100000):
            rem = until - time.monotonic()
            if rem <= 0:
                return True
            try:
                self._recv(time.monotonic() + rem)
            except socket.timeout:
                return True
            except harness.SmtpError:
                return False
        return True


def parallel(*fns, timeout=120):
    """Run fns in threads; re-raise the first exception; bounded join."""
    errors = [None] * len(fns)
    results = [None] * len(fns)

    def wrap(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: B902 - re-raised below
            errors[i] = e

    threads = [threading.Thread(target=wrap, args=(i, f), daemon=True)
               for i, f in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for t, f in zip(threads, fns):
        assert not t.is_alive(), "%s still running after %s s" % (f.__name__, timeout)
    for e in errors:
        if e is not None:
            raise e
    return results


def session_ids(sl, addr):
    return re.findall(r"session=(\d+) connect from %s port=" % re.escape(addr),
                      sl.log())


def session_log(sl, addr):
    """Every sluice log line of the sessions from addr."""
    ids = set(session_ids(sl, addr))
    out = []
    for line in sl.log().splitlines():
        m = re.search(r"session=(\d+) ", line)
        if m and m.group(1) in ids:
            out.append(line)
    return out


SUMMARY_RX = (r"session=(\d+) client=%s port=\d+ .*? score=(-?\d+) signals=(\S+) "
              r"shaped=(\w+) shaped_s=(\d+) phase=(\S+) .*outcome=")


def summary(sl, addr, timeout=10):
    """The summary line's match of addr's (last) session, waited for."""
    rx = re.compile(SUMMARY_RX % re.escape(addr))

    def find():
        m = rx.findall(sl.log())
        return m[-1] if m else None
    return harness.wait_until(find, timeout)


def wait_log(sl, pattern, timeout=10):
    rx = re.compile(pattern)
    return harness.wait_until(lambda: rx.search(sl.log()), timeout)


def metrics_text(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 200, r.status
        return r.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


def metric(text, name):
    """Value of the sample named exactly name (labels included), or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line[len(name) + 1:])
    return None


def assert_alive(sl):
    assert sl.alive(), "sluice exited during the test; log:\n" + sl.log()[-4000:]
    crashed = [l for l in sl.log().splitlines() if "killed by signal" in l]
    assert not crashed, "a sluice worker crashed:\n" + "\n".join(crashed)


def outq(sock):
    """Bytes of sock's send queue: not sent yet or not acknowledged yet."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ,
                                          struct.pack("i", 0)))[0]


# ------------------------------------------------- 01 greeting trickles

@pytest.mark.deadline(60)
def test_shape_01_listed_greeting_trickles_unlisted_prompt(postfix, sluice):
    """A listed client gets its greeting at shape_rate; an unlisted one
    gets it after greet_wait and at full speed."""
    pf = postfix()
    greet_wait = 2.0
    sl = sluice(pf, **shaping(greet_wait="2s"))

    def listed():
        c = TimedClient(sl, BLOCKLISTED, timeout=40)
        try:
            return c, c.read_reply(40)
        finally:
            c.close()

    def unlisted():
        c = TimedClient(sl, CLIENT23, timeout=20)
        try:
            return c, c.read_reply(20)
        finally:
            c.close()

    (lc, lr), (uc, ur) = parallel(listed, unlisted, timeout=50)

    code, text, start, end = lr
    assert code == 220 and text == ["%s ESMTP" % harness.SLUICE_HOSTNAME], lr
    rate = lc.rate(start, end)
    took = lc.arrival(end - 1) - lc.arrival(start)
    print("listed greeting: first byte %.2f s, %.2f B/s over %.2f s"
          % (lc.arrival(start), rate, took))
    assert 3 <= rate <= 7, ("listed greeting (%d bytes) at %.2f B/s over %.2f s;"
                            " arrivals from connect: %s"
                            % (end - start, rate, took,
                               [round(lc.arrival(i), 2) for i in range(start, end)]))
    # It is the greeting that is slow, not the wait before it.
    assert lc.arrival(start) < greet_wait + 1.5, lc.arrival(start)

    code, text, start, end = ur
    assert code == 220, ur
    done = uc.arrival(end - 1)
    print("unlisted greeting complete after %.2f s" % done)
    assert greet_wait - 0.25 <= done <= greet_wait + 1.5, \
        "unlisted greeting complete %.2f s after connect (greet_wait %.1f s)" % (
            done, greet_wait)

    shaped = [l for l in session_log(sl, BLOCKLISTED) if " SHAPED " in l]
    assert shaped, "\n".join(session_log(sl, BLOCKLISTED))
    assert not [l for l in session_log(sl, CLIENT23) if " SHAPED " in l]
    assert_alive(sl)


# ------------------------------------------ 02 unread pushing is not acked

@pytest.mark.deadline(60)
def test_shape_02_pushing_client_is_not_acknowledged(postfix, sluice):
    """A listed client that writes without reading gets at most
    shape_rate * t + 32 KiB acknowledged by TCP after t = 10 s."""
    pf = postfix()
    sl = sluice(pf, **shaping(greet_wait="1s"))
    c = TimedClient(sl, BLOCKLISTED, sndbuf=4 << 20)
    s = c.sock
    s.setblocking(False)
    # One endless line: commands would meet sluice's junk and error limits
    # and end the session; this measures the window, not those limits.
    chunk = b"A" * 12000
    sent, samples, closed = 0, [], None
    t0 = time.monotonic()
    next_sample = t0 + 1
    try:
        for _ in range(1000000):
            now = time.monotonic()
            if now - t0 >= 10:
                break
            if now >= next_sample:
                samples.append((round(now - t0, 1), sent, sent - outq(s)))
                next_sample += 1
            _, w, _ = select.select([], [s], [], 0.05)
            if not w:
                continue
            try:
                sent += s.send(chunk)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:  # reset or pipe: sluice closed on us
                closed = e
                break
        t = time.monotonic() - t0
        unacked = outq(s)
    finally:
        c.close()
    got = sent - unacked
    limit = RATE * t + 32 * 1024
    detail = ("after %.1f s: sent %d, acknowledged %d (limit %d); "
              "(t, sent, acked) per second: %s; socket error: %r"
              % (t, sent, got, limit, samples, closed))
    assert closed is None, detail
    # The client must have offered more than the limit, else this proves
    # nothing.
    assert sent > limit + 64 * 1024, detail
    print(detail)
    assert got <= limit, detail
    assert [l for l in session_log(sl, BLOCKLISTED) if " SHAPED " in l], \
        "\n".join(session_log(sl, BLOCKLISTED))
    assert_alive(sl)


# ------------------------------- 03 both lists: fast; pre-greeting: shaped

@pytest.mark.deadline(60)
def test_shape_03_both_lists_fast_pregreet_shaped(postfix, sluice):
    """A client on the block and the allow list (3 - 5) is not shaped; a
    client that talks before the greeting is (PREGREET)."""
    pf = postfix()
    greet_wait = 2.0
    sl = sluice(pf, **shaping(greet_wait="2s"))

    def both():
        c = TimedClient(sl, BOTH_LISTS, timeout=20)
        try:
            r = c.read_reply(20)
            t = time.monotonic()
            c.send("EHLO client2.example\r\n")
            e = c.read_reply(20)
            ehlo_s = time.monotonic() - t
            c.send("QUIT\r\n")
            q = c.read_reply(20)
            return c, r, e, ehlo_s, q
        finally:
            c.close()

    def pregreet():
        c = TimedClient(sl, CLIENT23, timeout=40)
        try:
            c.send("EHLO %s\r\n" % CLIENT23_NAME)  # before the greeting
            r = c.read_reply(40)
            line = c.read_line(40)  # the first line of the EHLO reply
            return c, r, line
        finally:
            c.close()

    (bc, br, be, ehlo_s, bq), (pc, pr, pline) = parallel(both, pregreet, timeout=55)

    code, _, start, end = br
    assert code == 220, br
    assert bc.arrival(end - 1) <= greet_wait + 1.5, \
        "greeting of the client on both lists complete after %.2f s" % bc.arrival(end - 1)
    assert be[0] == 250 and ehlo_s < 1.5, (be, ehlo_s)
    assert bq[0] == 221, bq

    code, _, start, _ = pr
    assert code == 220, pr
    line, _, end = pline
    assert line.startswith(b"250"), line
    rate = pc.rate(start, end)
    print("both lists: greeting after %.2f s, EHLO reply in %.2f s; pre-greeting "
          "talker: %.2f B/s" % (bc.arrival(br[3] - 1), ehlo_s, rate))
    assert 3 <= rate <= 7, ("pre-greeting talker: greeting + first EHLO line "
                            "(%d bytes) at %.2f B/s" % (end - start, rate))

    plog = session_log(sl, CLIENT23)
    assert [l for l in plog if "PREGREET" in l], "\n".join(plog)
    assert [l for l in plog if " SHAPED " in l], "\n".join(plog)
    blog = session_log(sl, BOTH_LISTS)
    assert not [l for l in blog if " SHAPED " in l], "\n".join(blog)
    m = summary(sl, BOTH_LISTS)
    assert m and m[3] == "no", "\n".join(blog)
    m = summary(sl, CLIENT23)
    assert m and m[3] == "yes" and "PREGREET" in m[2].split(","), "\n".join(plog)
    assert_alive(sl)


# ------------------------------- 04 patient delivers, impatient hangs up

@pytest.mark.deadline(100)
def test_shape_04_patient_delivers_impatient_hangs_up(postfix, sluice):
    pf = postfix()
    mport = harness.free_port()
    sl = sluice(pf, **shaping(greet_wait="2s", shape_time="30s",
                              metrics_listen="127.0.0.1:%d" % mport))
    tok = token("04")

    def patient():
        t0 = time.monotonic()
        with SmtpRaw(sl.host, sl.port, source=BLOCKLISTED, timeout=120) as c:
            assert c.read_reply()[0] == 220
            c.expect("HELO patient.example", 250)
            c.expect("MAIL FROM:<a@example.net>", 250)
            c.expect("RCPT TO:<alice@example.com>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(message(tok)) + b".\r\n")
            final = c.read_reply()
            c.cmd("QUIT")
        return final, time.monotonic() - t0

    def impatient():
        c = TimedClient(sl, BLOCKLISTED2, timeout=10)
        try:
            c.drain(c.t_connect + 5)
            got = bytes(c.data)
        finally:
            c.close()
        return got

    (final, took), seen = parallel(patient, impatient, timeout=95)

    print("patient session: %.1f s" % took)
    assert final[0] == 250, final
    # Shaping held it back for a while (at most shape_time).
    assert took >= 15, "patient session took only %.1f s" % took
    got = pf.wait_messages(1, 20, lambda m: m.subject == tok)
    assert len(got) == 1, pf.messages()
    rcv = got[0].get_all("Received")[0]
    assert "[%s]" % BLOCKLISTED in rcv, rcv

    # The impatient client hung up while its greeting was still coming,
    # and never reached the backend.
    assert b"\n" not in seen, "the full greeting reached the impatient client: %r" % seen
    assert BLOCKLISTED2 not in pf.maillog(), [
        l for l in pf.maillog().splitlines() if BLOCKLISTED2 in l]
    line = wait_log(sl, r"client=%s HANGUP after (\d+) s in (\w+)"
                    % re.escape(BLOCKLISTED2), 10)
    ilog = session_log(sl, BLOCKLISTED2)
    assert line, "\n".join(ilog)
    secs, phase = int(line.group(1)), line.group(2)
    assert 1 <= secs <= 5, line.group(0)
    m = summary(sl, BLOCKLISTED2)
    assert m and m[3] == "yes", ilog
    text = metrics_text(mport)
    hangups = [l for l in text.splitlines() if l.startswith("sluice_shaped_hangups")]
    # It was in the greeting: say so in the log, the summary and metrics.
    problems = []
    if phase != "greeting":
        problems.append("log: %r" % line.group(0))
    if m[5] != "greeting":
        problems.append("summary: phase=%s" % m[5])
    if metric(text, 'sluice_shaped_hangups_total{phase="greeting"}') != 1:
        problems.append("metrics: %s" % hangups)
    assert not problems, ("client hung up %r into its greeting; %s"
                          % (seen, "; ".join(problems)))
    assert_alive(sl)


# ------------------------------- 05 a real Postfix sender is patient enough

SENDER_MASTER = harness.SENDER_MASTER


@pytest.mark.deadline(170)
def test_shape_05_postfix_sender_delivers_1mb_while_shaped(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, **shaping(greet_wait="6s", shape_time="60s"))
    sender = postfix(name="sender", master_extra=SENDER_MASTER,
                     extra=harness.sender_extra(sl.host, sl.port, BLOCKLISTED))
    tok = token("05")
    body = b"".join(b"%06d %s\n" % (i, b"x" * 69) for i in range(13500))
    assert len(body) >= 1000000
    msg = (b"From: Sender <s@sender.test>\n"
           b"To: <alice@example.com>\n"
           b"Subject: " + tok.encode() + b"\n"
           b"Message-ID: <" + tok.encode() + b"@sender.test>\n"
           b"\n" + body)
    r = subprocess.run(["sendmail", "-C", sender.config_dir, "-i",
                        "-f", "s@sender.test", "alice@example.com"],
                       input=msg, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    assert r.returncode == 0, r.stdout
    got = pf.wait_messages(1, 150, lambda m: m.subject == tok)
    slog = sender.maillog()
    assert len(got) == 1, "not delivered; sender log:\n%s" % slog[-3000:]
    assert got[0].body.endswith(body), len(got[0].body)
    rcv = got[0].get_all("Received")[0]
    assert "[%s]" % BLOCKLISTED in rcv, rcv
    assert harness.wait_until(lambda: "status=sent" in sender.maillog(), 10), slog[-3000:]
    slog = sender.maillog()
    assert "status=deferred" not in slog, slog[-3000:]
    # It was really shaped on the way.
    assert [l for l in session_log(sl, BLOCKLISTED) if " SHAPED " in l], \
        "\n".join(session_log(sl, BLOCKLISTED))
    m = summary(sl, BLOCKLISTED)
    print("sender session summary: %s" % (m,))
    assert m and m[3] == "yes" and int(m[4]) >= 20, (m, session_log(sl, BLOCKLISTED))
    assert_alive(sl)


# ---------------------------------------------------------- 06 early close

@pytest.mark.deadline(60)
def test_shape_06_send_and_close_gets_nothing_delivered(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, **shaping(greet_wait="0s"))
    tok = token("06")
    with SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=20) as c:
        assert c.read_reply()[0] == 220
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        # The dot and the FIN in one segment (corked until the close), as
        # a bot's send-and-close often arrives: sluice sees the close
        # when it has the dot. A FIN that came only after the message
        # had gone to the server would be the duplicate case instead.
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        c.send(dot_stuff(message(tok)) + b".\r\n")
        c.sock.close()  # no waiting for the reply
    assert wait_log(sl, r"client=%s EARLYCLOSE" % re.escape(CLIENT23), 10), \
        "\n".join(session_log(sl, CLIENT23))
    time.sleep(1.5)
    assert not [m for m in pf.messages() if m.subject == tok], pf.messages()

    tok2 = token("06b")
    with SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=20) as c:
        assert c.read_reply()[0] == 220
        c.ehlo(CLIENT23_NAME)
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok2)))
        assert final[0] == 250, final
        c.cmd("QUIT")
    assert len(pf.wait_messages(1, 15, lambda m: m.subject == tok2)) == 1
    time.sleep(0.5)
    assert not [m for m in pf.messages() if m.subject == tok], pf.messages()
    assert len(re.findall(r"EARLYCLOSE", sl.log())) == 1, sl.log()[-3000:]
    assert_alive(sl)


# ---------------------------------------------------------- 07 reject mode

@pytest.mark.deadline(60)
def test_shape_07_reject_threshold_554_after_greeting(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, **shaping(greet_wait="1s", reject_threshold=3, shape_rate=1000))
    with SmtpRaw(sl.host, sl.port, source=BLOCKLISTED, timeout=20) as c:
        code, text = c.read_reply()
        assert code == 220, (code, text)
        assert c.cmd("EHLO rejected.example")[0] == 250
        code, text = c.cmd("MAIL FROM:<a@example.net>")
        assert code == 554 and text[0].startswith("5.7.1"), (code, text)
        code, text = c.cmd("RCPT TO:<alice@example.com>")
        assert code // 100 == 5, (code, text)
        code, text = c.cmd("DATA")
        assert code // 100 == 5, (code, text)
        c.cmd("QUIT")
    m = summary(sl, BLOCKLISTED)
    assert m, sl.log()[-3000:]
    assert wait_log(sl, r"client=%s REJECT score=" % re.escape(BLOCKLISTED), 5)
    time.sleep(0.5)
    assert BLOCKLISTED not in pf.maillog(), [
        l for l in pf.maillog().splitlines() if BLOCKLISTED in l]
    assert pf.messages() == []
    assert_alive(sl)


# ------------------------------------------------------ 08 summary line

@pytest.mark.deadline(60)
def test_shape_08_summary_line_of_a_shaped_session(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, **shaping(greet_wait="1s", shape_time="3s"))
    with SmtpRaw(sl.host, sl.port, source=BLOCKLISTED, timeout=30) as c:
        assert c.read_reply()[0] == 220
        c.expect("HELO summary.example", 250)
        assert c.cmd("QUIT")[0] == 221
    m = summary(sl, BLOCKLISTED)
    assert m, "no summary line:\n" + "\n".join(session_log(sl, BLOCKLISTED))
    _, score, signals, shaped, shaped_s, phase = m
    line = [l for l in session_log(sl, BLOCKLISTED) if " shaped=" in l]
    assert int(score) >= 3, line
    assert signals.split(",")[0] == "DNSBL", line
    assert shaped == "yes", line
    assert 2 <= int(shaped_s) <= 4, line
    assert phase in PHASES, line
    assert_alive(sl)


# ------------------------------------------- 09 the end-of-data reply is held

@pytest.mark.deadline(90)
def test_shape_09_final_reply_held_for_the_rest_of_shape_time(postfix, sluice):
    """A shaped session's end-of-data reply waits, silent, for the rest of
    its shape_time budget before the replay: a patient sender gets its 250
    after the hold and its message is delivered; a bot that gives up on
    silence (closes 3 s after its dot) gets nothing delivered and is
    counted as a hang-up in the data phase; an unshaped client is not
    held at all."""
    pf = postfix()
    mport = harness.free_port()
    # A fast trickle so that the dialogue takes well under a second and
    # nearly all of shape_time is left for the hold.
    sl = sluice(pf, **shaping(greet_wait="0s", shape_time="10s", shape_rate=2000,
                              metrics_listen="127.0.0.1:%d" % mport))
    tok_patient, tok_bot, tok_clean = token("09p"), token("09b"), token("09c")

    def send(source, tok, helo, wait_reply):
        with SmtpRaw(sl.host, sl.port, source=source, timeout=60) as c:
            assert c.read_reply()[0] == 220
            c.expect("HELO %s" % helo, 250)
            c.expect("MAIL FROM:<a@example.net>", 250)
            c.expect("RCPT TO:<alice@example.com>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(message(tok)) + b".\r\n")
            t_dot = time.monotonic()
            if not wait_reply:
                ready = select.select([c.sock], [], [], 3.0)[0]
                return (None, ready, time.monotonic() - t_dot)
            final = c.read_reply()
            took = time.monotonic() - t_dot
            c.cmd("QUIT")
            return (final, None, took)

    (pfinal, _, ptook), (_, bot_heard, _), (cfinal, _, ctook) = parallel(
        lambda: send(BLOCKLISTED, tok_patient, "patient.example", True),
        lambda: send(BLOCKLISTED2, tok_bot, "bot.example", False),
        lambda: send(CLIENT23, tok_clean, CLIENT23_NAME, True),
        timeout=60)

    assert pfinal[0] == 250 and pfinal[1][0].startswith("2.0.0"), pfinal
    assert 7.0 <= ptook <= 14.0, "patient sender's 250 came %.1f s after its dot" % ptook
    assert cfinal[0] == 250, cfinal
    assert ctook < 3.0, "an unshaped client waited %.1f s for its 250" % ctook
    assert not bot_heard, "the held bot heard something within 3 s of its dot"

    got = pf.wait_messages(2, 20, lambda m: m.subject in (tok_patient, tok_clean))
    assert sorted(m.subject for m in got) == sorted([tok_patient, tok_clean]), got
    assert wait_log(sl, r"client=%s HOLD end-of-data reply for \d+ s"
                    % re.escape(BLOCKLISTED), 5), "\n".join(session_log(sl, BLOCKLISTED))
    line = wait_log(sl, r"client=%s HANGUP after \d+ s in (\w+)"
                    % re.escape(BLOCKLISTED2), 15)
    assert line and line.group(1) == "data", "\n".join(session_log(sl, BLOCKLISTED2))
    assert not [l for l in session_log(sl, CLIENT23) if " HOLD " in l]
    time.sleep(1.0)
    assert not [m for m in pf.messages() if m.subject == tok_bot], pf.messages()
    text = metrics_text(mport)
    assert metric(text, "sluice_final_holds_total") == 2, text
    assert metric(text, 'sluice_shaped_hangups_total{phase="data"}') == 1, text
    assert_alive(sl)


# ------------------------- 10 many shaped sessions on one worker's trickle

MANY = 40
MANY_NET = "127.0.0.128/26"


def many_source(i):
    return "127.0.0.%d" % (130 + i)


@pytest.mark.deadline(90)
def test_shape_10_many_shaped_sessions_on_one_worker(postfix, sluice, workdir):
    """Forty deny-listed clients on one worker, shaped at once: each sees
    its greeting at shape_rate (the worker's one trickle serves them all);
    one that hangs up mid-greeting is counted, closed and freed; when
    shape_time is spent the others go on at full speed and deliver."""
    pf = postfix()
    mport = harness.free_port()
    deny = "%s/deny-many.txt" % workdir
    with open(deny, "w") as f:
        f.write(MANY_NET + "\n")
    os.chmod(deny, 0o644)
    shape_s = 7.0
    sl = sluice(pf, **shaping(greet_wait="0s", shape_time="7s",
                              cidr_deny_file=deny,
                              metrics_listen="127.0.0.1:%d" % mport))
    toks = [token("10-%d" % i) for i in range(MANY)]
    hangup = MANY  # its own address, after the others

    def client(i):
        c = TimedClient(sl, many_source(i), timeout=40)
        try:
            code, _, start, end = c.read_reply(30)
            assert code == 220, code
            rate = c.rate(start, end)
            # The budget is spent shape_s after the verdict: from then on,
            # a whole delivery at full speed.
            time.sleep(max(0.0, c.t_connect + shape_s + 0.5 - time.monotonic()))
            t = time.monotonic()
            for line, want in (("EHLO many%d.example" % i, 250),
                               ("MAIL FROM:<a@example.net>", 250),
                               ("RCPT TO:<alice@example.com>", 250),
                               ("DATA", 354)):
                c.send(line + "\r\n")
                got = c.read_reply(20)[0]
                assert got == want, (line, got)
            c.send(dot_stuff(message(toks[i])) + b".\r\n")
            assert c.read_reply(20)[0] == 250
            c.send("QUIT\r\n")
            assert c.read_reply(20)[0] == 221
            return rate, time.monotonic() - t
        finally:
            c.close()

    def quitter():
        c = TimedClient(sl, many_source(hangup), timeout=20)
        try:
            for _ in range(100):
                if len(c.data) >= 3:
                    break
                c._recv(time.monotonic() + 10)
            return bytes(c.data)
        finally:
            c.close()

    results = parallel(*[lambda i=i: client(i) for i in range(MANY)], quitter,
                       timeout=80)
    rates = [r for r, _ in results[:MANY]]
    fast = [t for _, t in results[:MANY]]
    print("greeting rates: min %.2f max %.2f B/s; after the budget: %.2f s at most"
          % (min(rates), max(rates), max(fast)))
    assert all(3 <= r <= 7 for r in rates), sorted(rates)
    assert max(fast) < 5, "after shape_time, a delivery took %.1f s" % max(fast)
    assert results[MANY] and b"\n" not in results[MANY], results[MANY]

    got = pf.wait_messages(MANY, 40, lambda m: m.subject in toks)
    assert len(got) == MANY, len(got)
    log = sl.log()
    assert len(re.findall(r"client=127\.0\.0\.\d+ SHAPED ", log)) == MANY + 1, log[-3000:]
    assert len(re.findall(r"shape_time spent after \d+s shaped; full speed", log)) == MANY
    assert wait_log(sl, r"client=%s HANGUP after \d+ s in greeting"
                    % re.escape(many_source(hangup)), 10), log[-3000:]
    # Every session, the one that hung up included, closed and freed.
    assert summary(sl, many_source(hangup)), log[-3000:]
    assert harness.wait_until(
        lambda: metric(metrics_text(mport), "sluice_sessions_active") == 0, 10), \
        metrics_text(mport)
    assert metric(metrics_text(mport), "sluice_shaped_sessions") == 0
    assert_alive(sl)
