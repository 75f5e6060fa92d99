"""
PROXY protocol inbound (issue 10 item 7): HAProxy from Debian in front of
sluice with send-proxy (v1) and send-proxy-v2, a real Postfix behind, and
hostile headers sent straight to sluice's PROXY listener.

Each client connects from its own 127.x address, so the address that
reaches Postfix through XCLIENT can only have come from the header (HAProxy
itself connects to sluice from 127.0.0.1).

Every wait is bounded in time, every loop in count and time.
"""

import os
import re
import socket
import struct
import subprocess
import time
import uuid

import pytest

import harness
from harness import SmtpRaw, dot_stuff

V1_CLIENT = "127.0.0.31"
V2_CLIENT = "127.0.0.32"
UNTRUSTED = "127.0.0.66"
V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def message(tok):
    t = tok.encode()
    return (b"From: Proxy <a@example.net>\r\nTo: <alice@example.com>\r\n"
            b"Subject: " + t + b"\r\nMessage-ID: <" + t + b"@example.net>\r\n"
            b"\r\nThrough a balancer.\r\n")


def v2_tcp4(src, dst, sport, dport, cmd=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2SIG + bytes([cmd, 0x11]) + struct.pack("!H", len(body)) + body


class Haproxy:
    """HAProxy in the foreground (-db) with one frontend per (port, server
    options); stopped with SIGTERM, then SIGKILL."""

    def __init__(self, d, backend_port, fronts):
        self.dir = harness.make_world_dir(d)
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.fronts = fronts  # [(port, "send-proxy ...")]
        self.backend_port = backend_port
        self.proc = None

    def start(self, timeout=10):
        lines = ["global", "  maxconn 200", "defaults", "  mode tcp",
                 "  timeout connect 5s", "  timeout client 60s",
                 "  timeout server 60s"]
        for i, (port, opts) in enumerate(self.fronts):
            lines += ["frontend fe%d" % i, "  bind 127.0.0.1:%d" % port,
                      "  default_backend be%d" % i, "backend be%d" % i,
                      "  server s%d 127.0.0.1:%d %s" % (i, self.backend_port, opts)]
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.logf = open(os.path.join(self.dir, "haproxy.log"), "ab")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.cfg],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, start_new_session=True)
        for port, _ in self.fronts:
            assert harness.wait_listening(port, timeout, "127.0.0.1", self.proc), \
                "haproxy did not listen on %d: %s" % (port, self.log())
        return self

    def log(self):
        with open(os.path.join(self.dir, "haproxy.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()


@pytest.fixture
def haproxy(workdir):
    started = []

    def make(backend_port, fronts):
        h = Haproxy(os.path.join(workdir, "haproxy"), backend_port, fronts)
        started.append(h)
        return h.start()

    yield make
    for h in started:
        h.stop()


def proxy_sluice(sluice, pf, **settings):
    port = harness.free_port()
    s = dict(listen="127.0.0.1:%d" % port,
             proxy_protocol_listen="127.0.0.1:%d" % port,
             proxy_trusted_networks="127.0.0.1/32", proxy_timeout="1s",
             metrics_listen="127.0.0.1:%d" % harness.free_port())
    s.update(settings)
    return sluice(pf, **s)




def deliver_via(port, source, tok):
    with SmtpRaw("127.0.0.1", port, source=source, timeout=20) as c:
        code, text = c.read_reply()
        assert code == 220, (code, text)
        c.ehlo("client.example")
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok)))
        assert final is not None and final[0] == 250, (rr, final)
        c.cmd("QUIT", timeout=5)


def closed_silently(sock, timeout):
    """(closed, bytes received, seconds): EOF or reset within timeout."""
    t0 = time.monotonic()
    got = b""
    deadline = t0 + timeout
    for _ in range(1000):
        left = deadline - time.monotonic()
        if left <= 0:
            return False, got, time.monotonic() - t0
        sock.settimeout(left)
        try:
            d = sock.recv(4096)
        except socket.timeout:
            return False, got, time.monotonic() - t0
        except OSError:
            return True, got, time.monotonic() - t0
        if not d:
            return True, got, time.monotonic() - t0
        got += d
    return False, got, time.monotonic() - t0


def raw(sl, source="127.0.0.1"):
    return socket.create_connection((sl.host, sl.port), timeout=5,
                                    source_address=(source, 0))


@pytest.mark.deadline(60)
def test_proxy_01_haproxy_v1_and_v2_client_address_reaches_postfix(
        postfix, sluice, haproxy):
    pf = postfix()
    sl = proxy_sluice(sluice, pf, greet_wait="1s")
    p1, p2 = harness.free_port(), harness.free_port()
    # v2 with health checks: HAProxy sends them as v2 LOCAL.
    haproxy(sl.port, [(p1, "send-proxy"),
                      (p2, "send-proxy-v2 check inter 300ms check-send-proxy")])
    tok1, tok2 = "proxy-v1-" + uuid.uuid4().hex[:8], "proxy-v2-" + uuid.uuid4().hex[:8]
    deliver_via(p1, V1_CLIENT, tok1)
    deliver_via(p2, V2_CLIENT, tok2)
    got = pf.wait_messages(2, 20, lambda m: m.subject in (tok1, tok2))
    assert sorted(m.subject for m in got) == sorted([tok1, tok2])

    # Postfix saw each client by the address in its header, via XCLIENT.
    log = pf.maillog()
    for addr in (V1_CLIENT, V2_CLIENT):
        assert re.search(r"client=\S*\[%s\]" % re.escape(addr), log), \
            "Postfix never saw %s:\n%s" % (addr, log[-3000:])
    # A session's summary line is written once its client has gone, which
    # may be after Postfix has already delivered the message.
    def summarised(addr):
        return re.search(r"client=%s port=.* outcome=" % re.escape(addr), sl.log())
    assert harness.wait_until(lambda: all(summarised(a) for a in (V1_CLIENT, V2_CLIENT)), 10), \
        "no summary line for both clients:\n" + sl.log()[-3000:]
    slog = sl.log()
    assert re.search(r"proxy: peer=127\.0\.0\.1 client=127\.0\.0\.31 port=\d+ version=1", slog)
    assert re.search(r"proxy: peer=127\.0\.0\.1 client=127\.0\.0\.32 port=\d+ version=2", slog)
    assert re.search(r"connect from 127\.0\.0\.31 ", slog)
    assert re.search(r"connect from 127\.0\.0\.32 ", slog)
    # The header's bytes never count as talking before the greeting.
    for addr in (V1_CLIENT, V2_CLIENT):
        summ = [l for l in slog.splitlines() if "client=%s port=" % addr in l
                and "outcome=" in l]
        assert summ and all("PREGREET" not in l for l in summ), summ
    assert sl.metric("sluice_proxy_headers_total") >= 2
    assert harness.wait_until(lambda: sl.metric("sluice_proxy_local_total") >= 1, 5), \
        "no health check seen as v2 LOCAL"
    assert "PREGREET" not in "".join(l for l in slog.splitlines() if "127.0.0.1 " in l)


@pytest.mark.deadline(60)
def test_proxy_02_hostile_headers_closed_with_nothing_sent(postfix, sluice):
    pf = postfix()
    sl = proxy_sluice(sluice, pf)
    # A valid header from outside proxy_trusted_networks.
    with raw(sl, UNTRUSTED) as s:
        s.sendall(b"PROXY TCP4 192.0.2.9 127.0.0.1 4000 25\r\nEHLO x\r\n")
        closed, got, _ = closed_silently(s, 3)
        assert closed and got == b"", got
    cases = [
        ("garbage", b"EHLO client.example\r\n"),
        ("tls hello", b"\x16\x03\x01\x00\xa0\x01\x00"),
        ("bad v1 address", b"PROXY TCP4 999.1.1.1 127.0.0.1 4000 25\r\n"),
        ("v1 too long", b"PROXY TCP4 " + b"1" * 200),
        ("v1 unknown", b"PROXY UNKNOWN\r\n"),
        ("v2 local", V2SIG + b"\x20\x00\x00\x00"),
        ("v2 bad version", v2_tcp4("192.0.2.9", "127.0.0.1", 4000, 25, cmd=0x11)),
    ]
    for name, data in cases:
        with raw(sl) as s:
            s.sendall(data)
            closed, got, secs = closed_silently(s, 3)
            assert closed and got == b"", (name, got)
            assert secs < 0.9, (name, secs)  # at once, not at proxy_timeout
    # Truncated: the peer goes away mid-header.
    with raw(sl) as s:
        s.sendall(b"PROXY TCP4 192.0.2.9 127.0")
    # Slow: a header dribbled past proxy_timeout (1s) is cut at 1s.
    with raw(sl) as s:
        t0 = time.monotonic()
        hdr = b"PROXY TCP4 192.0.2.9 127.0.0.1 4000 25\r\n"
        closed = False
        for i in range(len(hdr)):
            try:
                s.sendall(hdr[i:i + 1])
            except OSError:
                closed = True
                break
            time.sleep(0.15)
            if time.monotonic() - t0 > 3:
                break
        if not closed:
            closed, got, _ = closed_silently(s, 3)
            assert got == b"", got
        assert closed
        assert 0.9 <= time.monotonic() - t0 < 3
    assert harness.wait_until(lambda: sl.metric(
        'sluice_proxy_refused_total{reason="timeout"}') == 1, 5)
    assert sl.metric('sluice_proxy_refused_total{reason="untrusted"}') == 1
    # five malformed, one cut short
    assert harness.wait_until(lambda: sl.metric(
        'sluice_proxy_refused_total{reason="invalid"}') == 6, 5)
    assert sl.metric('sluice_proxy_refused_total{reason="unsupported"}') == 1
    assert sl.metric("sluice_proxy_local_total") == 1
    assert sl.metric("sluice_sessions_total") == 0
    log = sl.log()
    assert "proxy: peer=127.0.0.66 header refused: peer not in proxy_trusted_networks" in log
    assert "header refused: timeout (proxy_timeout)" in log
    assert "connect from" not in log
    # Nothing reached the mail server on behalf of any of these.
    assert "192.0.2.9" not in pf.maillog()
    assert sl.alive()


@pytest.mark.deadline(60)
def test_proxy_03_client_bytes_after_header_are_the_clients(postfix, sluice):
    """A header and the client's first command in one segment: the header
    is taken, the command is the client's own PREGREET (greet_wait), and a
    well-behaved client behind the header is served normally."""
    pf = postfix()
    sl = proxy_sluice(sluice, pf, greet_wait="1s")
    with raw(sl) as s:
        s.sendall(v2_tcp4("127.0.0.41", "127.0.0.1", 4100, 25) + b"EHLO early.example\r\n")
        s.settimeout(10)
        data = b""
        for _ in range(100):
            d = s.recv(4096)
            if not d:
                break
            data += d
            if b"\r\n" in data:
                break
        assert data.startswith(b"220") or data.startswith(b"554") or \
            data.startswith(b"421"), data
    tok = "proxy-late-" + uuid.uuid4().hex[:8]
    # A polite client: header, then waits for the greeting.
    port = sl.port
    with SmtpRaw("127.0.0.1", port, timeout=20) as c:
        c.send(v2_tcp4("127.0.0.43", "127.0.0.1", 4300, 25))
        code, text = c.read_reply()
        assert code == 220, (code, text)
        c.ehlo("client.example")
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok)))
        assert final and final[0] == 250, (rr, final)
    pf.wait_messages(1, 20, lambda m: m.subject == tok)
    assert re.search(r"client=\S*\[127\.0\.0\.43\]", pf.maillog())
    assert harness.wait_until(
        lambda: re.search(r"client=127\.0\.0\.41 .*signals=\S*PREGREET", sl.log()), 10), \
        sl.log()[-3000:]
    assert harness.wait_until(
        lambda: re.search(r"client=127\.0\.0\.43 port=.* outcome=", sl.log()), 10), \
        sl.log()[-3000:]
    polite = [l for l in sl.log().splitlines() if "client=127.0.0.43 port=" in l
              and "outcome=" in l]
    assert polite and "PREGREET" not in polite[0], polite


@pytest.mark.deadline(30)
def test_proxy_04_silent_connections_count_against_session_limit(postfix, sluice):
    """Headers still being read count as sessions: with session_limit = 2,
    a third silent connection is closed at once with nothing sent."""
    pf = postfix()
    sl = proxy_sluice(sluice, pf, session_limit="2", proxy_timeout="5s")
    held = [raw(sl), raw(sl)]
    try:
        time.sleep(0.3)  # both accepted and pending
        with raw(sl) as s:
            closed, got, secs = closed_silently(s, 3)
            assert closed and got == b"" and secs < 2, (closed, got, secs)
        assert sl.metric('sluice_proxy_refused_total{reason="limit"}') == 1
        assert "header refused: session_limit" in sl.log()
    finally:
        for s in held:
            s.close()


@pytest.mark.deadline(60)
def test_proxy_05_ipv6_client_from_v1_header_reaches_xclient(postfix, sluice):
    """An IPv6 client address from a TCP6 header is the one sluice passes
    with XCLIENT: the harness's Postfix (inet_protocols = ipv4) refuses it
    as IPV6:2001:db8::7, and sluice explains that (backend_warn)."""
    pf = postfix(allow_log=("Bad ADDR syntax",))
    sl = proxy_sluice(sluice, pf)
    with SmtpRaw("127.0.0.1", sl.port, timeout=20) as c:
        c.send(b"PROXY TCP6 2001:db8::7 2001:db8::1 40007 25\r\n")
        assert c.read_reply()[0] == 220
        c.ehlo("client.example")
        code, text = c.cmd("MAIL FROM:<a@example.net>", timeout=30)
        if code == 250:
            code, text = c.cmd("RCPT TO:<alice@example.com>", timeout=30)
        assert code == 451 and text[0].startswith("4.3.0"), (code, text)
    log = sl.log()
    assert "proxy: peer=127.0.0.1 client=2001:db8::7 port=40007 version=1" in log
    assert re.search(r"connect from 2001:db8::7 port=40007", log), log[-2000:]
    assert harness.wait_until(lambda: "MISCONFIGURED problem=xclient_ipv6" in sl.log(), 5)
    assert "Bad ADDR syntax: IPV6:2001:db8::7" in sl.log()
