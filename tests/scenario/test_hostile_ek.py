"""
Hostile catalogue (docs/hostile.md), groups E, F, G, H, I and K:
pipelining and synchronisation (50-56), DATA/BDAT/size/content (57-68),
response and log injection (69-72), resource exhaustion (73-81), DNS
(82-87) and client connection faults (101-104).

One test per case, named test_hostile_NNN_... (scripts/hostile-coverage.sh).
Each asserts sluice's exact reply code and enhanced status code (its own
replies come from src/replies.h); where the catalogue leaves a choice, the
test asserts sluice's documented choice (docs/hostile.md "Decisions",
docs/config.md).

Components, module-scoped where tests do not interfere:
  pf          one real Postfix for the module (harness.Postfix)
  main        sluice in front of it: smtpd_timeout=3s (slowloris, write
              deadline), greet_wait=0, message_size_limit=6m, shaping and
              reputation out of the way (shape_threshold huge,
              weight_reputation=0) so that one test's signals cannot slow
              the next one
  FakeDns     a programmable UDP DNS server in this file (malformed,
              forged, delayed and DNSBL answers)
  FakeBackend a scripted SMTP server in this file (malformed replies,
              slow DATA) for the cases Postfix cannot produce
  RecProxy    a recording TCP relay between sluice and Postfix that checks
              sluice's own pipelining toward the backend (case 56)
Other sluice instances are started per test where a setting differs.
"""

import os
import random
import re
import shutil
import socket
import struct
import threading
import time
import uuid

import pytest

import harness
from harness import CLIENT23, CLIENT23_NAME, SmtpRaw, dot_stuff, crlf_to_lf

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: AddressSanitizer")
SIZE_LIMIT = 6 * 1024 * 1024


# ------------------------------------------------------------------ helpers

def token(tag):
    return "hek-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok, body=b"Hello from the hostile E-K tests.\r\n",
            to=b"alice@example.com"):
    t = tok.encode()
    return (b"From: Hostile <a@example.net>\r\n"
            b"To: <" + to + b">\r\n"
            b"Subject: " + t + b"\r\n"
            b"Date: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            b"Message-ID: <" + t + b"@example.net>\r\n"
            b"\r\n" + body)


def is_san(sl):
    return "build-san" in sl.binary or "san" in os.path.basename(os.path.dirname(sl.binary))


def rss_limit(sl, kb):
    """An RSS growth bound in kB; under ASan freed memory sits in the
    allocator's quarantine (256 MB by default), so only a gross bound."""
    return 300 * 1024 if is_san(sl) else kb


def connect(sl, source=CLIENT23, timeout=20):
    c = SmtpRaw(sl.host, sl.port, source=source, timeout=timeout)
    code, text = c.read_reply()
    assert (code, text) == (220, ["%s ESMTP" % harness.SLUICE_HOSTNAME]), (code, text)
    return c


def ehlo(c, name=CLIENT23_NAME):
    code, lines = c.cmd("EHLO " + name)
    assert code == 250, (code, lines)
    return [l.upper() for l in lines[1:]]


def check(reply, code, enh, text=None):
    """reply (code, lines): exact code, enhanced status code (first line),
    and optionally the text after it."""
    got_code, lines = reply
    first = lines[0] if lines else ""
    assert got_code == code and first.split(" ")[0] == enh, \
        "expected %d %s, got %d %r" % (code, enh, got_code, lines)
    if text is not None:
        assert first == "%s %s" % (enh, text), "expected %r, got %r" % (
            "%s %s" % (enh, text), first)


def read_until_close(c, timeout=10):
    """All replies until the server closes: ([(code, lines)], closed)."""
    replies = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            replies.append(c.read_reply(timeout=max(0.05, deadline - time.monotonic())))
        except harness.SmtpError:
            return replies, True
        except ConnectionResetError:
            return replies, True
        except socket.timeout:
            return replies, False
    return replies, False


def is_closed(c, timeout=5):
    """True when the server closed within timeout; bytes read go to c.buf."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        c.sock.settimeout(remaining)
        try:
            d = c.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            return True
        if not d:
            return True
        c.buf += d


def children(ppid):
    out = set()
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % n) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        if int(rest[1]) == ppid and rest[0] not in ("Z", "X"):
            out.add(int(n))
    return out


def worker_pid(sl):
    pids = harness.wait_until(lambda: children(sl.proc.pid), 10)
    assert len(pids) == 1, "expected one worker, got %r" % pids
    return next(iter(pids))


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def assert_alive(sl):
    assert sl.alive(), "sluice exited; log:\n" + sl.log()[-4000:]
    log = sl.log()
    bad = [l for l in log.splitlines()
           if "killed by signal" in l or "exited with status" in l
           or any(m in l for m in SANITIZER_MARKS)]
    assert not bad, "worker crash or sanitizer report:\n" + "\n".join(bad[:20])


def by_subject(pf, tok):
    return [m for m in pf.messages() if m.subject == tok]


def send_message(c, tok, body=b"x\r\n", rcpts=("alice@example.com",),
                 params="", timeout=30):
    """MAIL, RCPT, DATA, body: returns the end-of-data reply."""
    check(c.cmd("MAIL FROM:<a@example.net>%s" % params), 250, "2.1.0")
    for r in rcpts:
        check(c.cmd("RCPT TO:<%s>" % r), 250, "2.1.5")
    c.send(b"DATA\r\n")
    assert c.read_reply() == (354, ["End data with <CR><LF>.<CR><LF>"])
    c.send(dot_stuff(message(tok, body)) + b".\r\n")
    return c.read_reply(timeout=timeout)


def queued(reply):
    """Postfix's queue answer: after "." "Ok: queued as ID", after BDAT
    LAST (sluice's default when Postfix offers CHUNKING) "Ok: N bytes
    queued as ID"."""
    check(reply, 250, "2.0.0")
    assert re.match(r"2\.0\.0 Ok: (\d+ bytes )?queued as \w+", reply[1][0]), reply


def log_lines_for(sl, addr):
    return [l for l in sl.log().splitlines() if "client=%s " % addr in l]


def sessions_of(sl, addr):
    return re.findall(r"session=(\d+) connect from %s " % re.escape(addr), sl.log())


# ------------------------------------------------------ module components

@pytest.fixture(scope="module")
def ek_dir(request, scenario_base):
    d = harness.make_world_dir(os.path.join(scenario_base, "hek"))
    failed = request.session.testsfailed
    yield d
    if request.session.testsfailed == failed:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pf(ek_dir):
    p = harness.Postfix(os.path.join(ek_dir, "pf"))
    p.write_config()
    try:
        p.start()
        yield p
    finally:
        p.stop()


class Instances:
    """Sluice instances of this module: start(name, **settings)."""

    def __init__(self, base, dns, tls_cert):
        self.base, self.dns, self.tls_cert = base, dns, tls_cert
        self.started = []

    def settings(self, name, backend_port, **kw):
        d = os.path.join(self.base, name)
        s = {
            "listen": "127.0.0.1:%d" % harness.free_port(),
            "backend": "127.0.0.1:%d" % backend_port,
            "backend_pool_size": "4",
            "backend_xclient": "yes",
            "myhostname": harness.SLUICE_HOSTNAME,
            "dns_servers": "127.0.0.1:%d" % self.dns.port,
            "spool_dir": os.path.join(d, "spool"),
            "state_dir": os.path.join(d, "state"),
            "workers": "1",
            "user": "nobody",
            "smtpd_timeout": "60s",
            "backend_timeout": "30s",
            "checkout_timeout": "30s",
            "greet_wait": "0s",
            "weight_reputation": "0",
            "shape_threshold": "1000000",
        }
        if kw.pop("tls", False):
            s["tls_cert_file"], s["tls_key_file"] = self.tls_cert
        for k, v in kw.items():
            if v is None:
                s.pop(k, None)
            else:
                s[k] = str(v)
        return d, s

    def start(self, name, backend_port, nofile=None, **kw):
        d, s = self.settings(name, backend_port, **kw)
        sl = (harness.Sluice if nofile is None else _limited(nofile))(d, s)
        if not os.access(sl.binary, os.X_OK):
            pytest.fail("sluice binary %s missing (make sluice)" % sl.binary,
                        pytrace=False)
        sl.write_config()
        self.started.append(sl)
        sl.start()
        return sl

    def stop(self, sl):
        rc = sl.stop()
        if sl in self.started:
            self.started.remove(sl)
        return rc

    def stop_all(self):
        for sl in list(self.started):
            sl.stop()
        self.started = []


@pytest.fixture(scope="module")
def inst(ek_dir, dns, tls_cert):
    i = Instances(ek_dir, dns, tls_cert)
    yield i
    i.stop_all()


@pytest.fixture(scope="module")
def main(inst, pf):
    return inst.start("main", pf.port, smtpd_timeout="3s",
                      message_size_limit=str(SIZE_LIMIT))


@pytest.fixture
def fresh(inst):
    """Instances started by one test, stopped at its end."""
    mine = []

    def make(name, backend_port, **kw):
        sl = inst.start(name + "-" + uuid.uuid4().hex[:6], backend_port, **kw)
        mine.append(sl)
        return sl
    yield make
    for sl in mine:
        alive = sl.alive()
        inst.stop(sl)
        if not alive:
            print("--- sluice log tail ---\n" + sl.log()[-4000:])


def _limited(nofile):
    """A harness.Sluice started under prlimit --nofile (lowering one's own
    limit needs no privilege; the workers inherit it)."""
    class Limited(harness.Sluice):
        def command(self):
            return ["prlimit", "--nofile=%d:%d" % (nofile, nofile), "--"] + \
                super().command()
    return Limited


# ------------------------------------------------------------ fake DNS

def _qname(data, off):
    labels = []
    for _ in range(128):
        ln = data[off]
        if ln == 0:
            return b".".join(labels), off + 1
        labels.append(data[off + 1:off + 1 + ln])
        off += 1 + ln
    raise ValueError("name too long")


def dns_enc(name):
    if isinstance(name, str):
        name = name.encode()
    out = b""
    for label in name.rstrip(b".").split(b"."):
        out += bytes([len(label)]) + label
    return out + b"\0"


def dns_rr(rtype, rdata, name=b"\xc0\x0c", ttl=60):
    return name + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def dns_a(ip):
    return socket.inet_aton(ip)


class FakeDns:
    """UDP DNS server on 127.0.0.1: rules[qname.lower()] -> fn(q, qend,
    qname, qtype) returning [(delay seconds, bytes)] (None: NXDOMAIN
    reply; []: no answer at all). Logs every query."""

    def __init__(self, answer=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.rules = {}
        self.queries = []  # (monotonic, qid, raw qname, qtype, src)
        self.lock = threading.Lock()
        self.stopping = False
        self.timers = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reply(self, q, qend, rcode=0, answers=(), tc=False, ancount=None, qid=None):
        flags = 0x8000 | 0x0400 | (struct.unpack(">H", q[2:4])[0] & 0x0100) | 0x0080 | rcode
        if tc:
            flags |= 0x0200
        hdr = (q[:2] if qid is None else struct.pack(">H", qid)) + struct.pack(
            ">HHHHH", flags, 1, len(answers) if ancount is None else ancount, 0, 0)
        return hdr + q[12:qend] + b"".join(answers)

    def ptr(self, addr, fn):
        self.rules[("%s.in-addr.arpa" % ".".join(reversed(addr.split(".")))).encode()] = fn

    def name_ptr(self, addr, name, a=None):
        """PTR addr -> name; A name -> a (None: NXDOMAIN for the A)."""
        self.ptr(addr, lambda q, qe, n, t: [(0, self.reply(q, qe, answers=[
            dns_rr(12, dns_enc(name))]))] if t == 12 else None)
        if a:
            self.rules[name.lower().encode() if isinstance(name, str) else name.lower()] = \
                lambda q, qe, n, t: [(0, self.reply(q, qe, answers=[dns_rr(1, dns_a(a))]))] \
                if t == 1 else None

    def count(self, qname):
        with self.lock:
            return sum(1 for x in self.queries if x[2].lower() == qname.lower())

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                q, src = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                qid = struct.unpack(">H", q[:2])[0]
                name, off = _qname(q, 12)
                qtype = struct.unpack(">H", q[off:off + 2])[0]
                qend = off + 4
            except (ValueError, IndexError, struct.error):
                continue
            with self.lock:
                self.queries.append((time.monotonic(), qid, name, qtype, src))
            if not self.answer:
                continue
            fn = self.rules.get(name.lower())
            out = fn(q, qend, name, qtype) if fn else None
            if out is None:
                out = [(0, self.reply(q, qend, rcode=3))]
            for delay, data in out:
                if delay <= 0:
                    self._send(data, src)
                else:
                    t = threading.Timer(delay, self._send, (data, src))
                    t.daemon = True
                    self.timers.append(t)
                    t.start()

    def _send(self, data, dst):
        try:
            self.sock.sendto(data, dst)
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        for t in self.timers:
            t.cancel()
        self.thread.join(2)
        self.sock.close()


# -------------------------------------------------------- fake backend

class FakeBackend:
    """A scripted SMTP server: answers line by line; rcpt_reply (bytes or
    fn(addr) -> bytes) answers RCPT; data_delay delays the 354. Records
    events per connection: (conn, kind, bytes)."""

    EHLO = (b"250-fake.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
            b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
            b"250-XCLIENT ADDR NAME PROTO HELO PORT\r\n250 SMTPUTF8\r\n")

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.rcpt_reply = b"250 2.1.5 Ok\r\n"
        self.data_delay = 0
        self.events = []
        self.lock = threading.Lock()
        self.stopping = False
        self.nconn = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def ev(self, conn, kind, data=b""):
        with self.lock:
            self.events.append((conn, kind, data))

    def _accept(self):
        self.ls.settimeout(0.2)
        while not self.stopping:
            try:
                s, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.nconn += 1
            threading.Thread(target=self._serve, args=(s, self.nconn), daemon=True).start()

    def _serve(self, s, n):
        buf = b""
        try:
            s.settimeout(60)
            s.sendall(b"220 fake.test ESMTP\r\n")
            in_data = False
            while not self.stopping:
                if in_data:
                    i = buf.find(b"\r\n.\r\n")
                    if i < 0 and buf.startswith(b".\r\n"):
                        i = -2
                    if i == -1:
                        d = s.recv(65536)
                        if not d:
                            self.ev(n, "closed", buf)
                            return
                        buf += d
                        continue
                    end = 3 if i == -2 else i + 5
                    self.ev(n, "dot", buf[:end])
                    buf = buf[end:]
                    in_data = False
                    s.sendall(b"250 2.0.0 Ok: queued as FAKE%d\r\n" % n)
                    continue
                if b"\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        self.ev(n, "closed", buf)
                        return
                    buf += d
                    continue
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r")
                self.ev(n, "cmd", line)
                verb = line.split(b" ")[0].upper().split(b":")[0]
                if verb in (b"EHLO", b"HELO"):
                    s.sendall(self.EHLO)
                elif verb == b"XCLIENT":
                    s.sendall(b"220 fake.test ESMTP\r\n")
                elif verb == b"MAIL":
                    s.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    r = self.rcpt_reply
                    if callable(r):
                        m = re.search(rb"<([^>]*)>", line)
                        r = r(m.group(1) if m else b"")
                    s.sendall(r)
                elif verb == b"DATA":
                    if self.data_delay:
                        time.sleep(self.data_delay)
                    s.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    in_data = True
                elif verb == b"QUIT":
                    s.sendall(b"221 2.0.0 Bye\r\n")
                    self.ev(n, "closed", b"")
                    return
                else:
                    s.sendall(b"250 2.0.0 Ok\r\n")
        except OSError as e:
            self.ev(n, "error", str(e).encode())
        finally:
            s.close()

    def stop(self):
        self.stopping = True
        self.ls.close()


# ------------------------------------------------------ recording proxy

GROUP_ENDERS = {"EHLO", "HELO", "XCLIENT", "DATA", "NOOP", "VRFY", "QUIT",
                "STARTTLS", "EXPN", "TURN", "ETRN", "BDAT"}


class RecProxy:
    """TCP relay 127.0.0.1:port -> 127.0.0.1:backend. For each connection,
    every chunk from sluice is recorded with the number of complete
    replies the backend had sent before it arrived."""

    def __init__(self, backend):
        self.backend = backend
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.conns = []  # dicts: chunks [(replies_seen, bytes)], replies
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.ls.settimeout(0.2)
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.backend), timeout=5)
            except OSError:
                c.close()
                continue
            st = {"chunks": [], "replies": 0, "lock": threading.Lock(), "s2c": b""}
            self.conns.append(st)
            threading.Thread(target=self._pump_s2c, args=(b, c, st), daemon=True).start()
            threading.Thread(target=self._pump_c2s, args=(c, b, st), daemon=True).start()

    def _pump_s2c(self, b, c, st):
        try:
            while True:
                d = b.recv(65536)
                if not d:
                    break
                with st["lock"]:
                    st["s2c"] += d
                    while b"\n" in st["s2c"]:
                        line, st["s2c"] = st["s2c"].split(b"\n", 1)
                        if len(line) >= 4 and line[3:4] == b" " or len(line.rstrip(b"\r")) == 3:
                            st["replies"] += 1
                c.sendall(d)
        except OSError:
            pass
        finally:
            for x in (b, c):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _pump_c2s(self, c, b, st):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                with st["lock"]:
                    st["chunks"].append((st["replies"], d))
                b.sendall(d)
        except OSError:
            pass
        finally:
            for x in (b, c):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def items(chunks):
        """[(name, replies seen when its first byte arrived)]: commands, and
        a message body (up to and including its final dot) as 'BODY',
        BDAT's counted octets as 'OCTETS'."""
        out, buf, at, in_body = [], b"", 0, False
        pending = []  # (offset in buf where a chunk starts, replies)
        for replies, d in chunks:
            pending.append((len(buf), replies))
            buf += d
        pos = 0

        def seen_at(off):
            r = 0
            for start, rep in pending:
                if start <= off:
                    r = rep
            return r
        while pos < len(buf):
            if in_body:
                i = buf.find(b"\r\n.\r\n", pos - 2 if pos >= 2 else pos)
                if buf.startswith(b".\r\n", pos):
                    end = pos + 3
                elif i < 0:
                    out.append(("BODY", seen_at(pos)))
                    break
                else:
                    end = i + 5
                out.append(("BODY", seen_at(pos)))
                pos = end
                in_body = False
                continue
            j = buf.find(b"\n", pos)
            if j < 0:
                break
            line = buf[pos:j].rstrip(b"\r").decode("latin-1")
            verb = line.split(" ")[0].split(":")[0].upper()
            out.append((verb, seen_at(pos)))
            pos = j + 1
            if verb == "DATA":
                in_body = True
            if verb == "BDAT":  # "BDAT n LAST": its n octets follow at once
                out.append(("OCTETS", seen_at(pos)))
                pos += int(line.split(" ")[1])
        return out

    def violations(self):
        bad = []
        for n, st in enumerate(self.conns):
            with st["lock"]:
                items = self.items(list(st["chunks"]))
            for k, (name, seen) in enumerate(items):
                if name == "HELO":
                    bad.append((n, k, "HELO sent to the backend"))
                need = 1 if k == 0 else (k + 1 if items[k - 1][0] in GROUP_ENDERS
                                         or items[k - 1][0] == "DATA" else 0)
                if name == "OCTETS":
                    need = 0  # part of its BDAT command (RFC 3030)
                if seen < need:
                    bad.append((n, k, "%s sent after %s with %d replies seen, needs %d"
                                % (name, items[k - 1][0] if k else "connect", seen, need)))
        return bad

    def stop(self):
        self.stopping = True
        self.ls.close()


# =================================================================== E

@pytest.mark.deadline(60)
def test_hostile_050_pregreet_shaped_and_continued(pf, fresh):
    """Talk before the greeting: nothing is answered before the greeting;
    the client is flagged PREGREET, shaped, and served (Decision 3)."""
    sl = fresh("pregreet", pf.port, greet_wait="2s", shape_threshold="3",
               shape_rate="200", weight_reputation="0")
    c = SmtpRaw(sl.host, sl.port, source="127.0.0.50", timeout=20)
    try:
        t0 = time.monotonic()
        c.send(b"EHLO pregreet.example\r\n")
        early = c.pending(1.5)
        assert early == b"", "answered before the greeting: %r" % early
        code, text = c.read_reply(timeout=15)
        assert (code, text) == (220, ["%s ESMTP" % harness.SLUICE_HOSTNAME])
        assert time.monotonic() - t0 >= 1.9, "greeting did not wait greet_wait"
        # the EHLO sent early is answered after the greeting (continued)
        code, lines = c.read_reply(timeout=15)
        assert code == 250 and lines[0] == harness.SLUICE_HOSTNAME, (code, lines)
        check(c.cmd("NOOP", timeout=15), 250, "2.0.0", "Ok")
        check(c.cmd("QUIT", timeout=15), 221, "2.0.0", "Bye")
    finally:
        c.close()
    assert harness.wait_until(
        lambda: re.search(r"client=127\.0\.0\.50 PREGREET weight=\d+ score=\d+ count=23",
                          sl.log()), 5), sl.log()[-3000:]
    assert re.search(r"client=127\.0\.0\.50 SHAPED ", sl.log()), sl.log()[-3000:]
    assert_alive(sl)


@pytest.mark.deadline(60)
def test_hostile_051_pipelining_in_helo_session(pf, main):
    # in one segment with HELO
    c = connect(main, source="127.0.0.51")
    c.send(b"HELO client23.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    replies, closed = read_until_close(c)
    c.close()
    assert closed, replies
    assert replies, "no reply"
    check(replies[-1], 554, "5.5.0", "Error: SMTP protocol synchronization")
    assert all(r[0] != 250 or r[1] == ["sluice.test"] for r in replies[:-1]), replies
    assert len(replies) <= 2, replies
    # HELO answered alone, then MAIL and RCPT in one segment (SMTP, not ESMTP)
    c = connect(main, source="127.0.0.51")
    assert c.cmd("HELO client23.example") == (250, [harness.SLUICE_HOSTNAME])
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    replies, closed = read_until_close(c)
    c.close()
    assert closed and len(replies) == 1, replies
    check(replies[0], 554, "5.5.0", "Error: SMTP protocol synchronization")
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_052_pipelining_past_group_end_and_before_354(pf, main):
    # (a) anything after EHLO in the same segment
    c = connect(main, source="127.0.0.52")
    c.send(b"EHLO client23.example\r\nMAIL FROM:<a@b.example>\r\n")
    replies, closed = read_until_close(c)
    c.close()
    assert closed and replies, replies
    check(replies[-1], 554, "5.5.0", "Error: SMTP protocol synchronization")
    assert not any(r[0] == 250 and r[1][0].startswith("2.1.0") for r in replies), replies
    # (b) content before 354, with a command hidden in it
    tok = token("052")
    c = connect(main, source="127.0.0.52")
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    c.send(b"DATA\r\nSubject: " + tok.encode() + b"\r\n\r\nbody\r\n"
           b"RCPT TO:<x@remote.example>\r\n.\r\n")
    replies, closed = read_until_close(c)
    c.close()
    assert closed and len(replies) == 1, replies
    check(replies[0], 554, "5.5.0", "Error: SMTP protocol synchronization")
    # (c) DATA refused (no transaction): what follows must not run either
    c = connect(main, source="127.0.0.52")
    ehlo(c)
    c.send(b"DATA\r\nMAIL FROM:<x@y.example>\r\n")
    replies, closed = read_until_close(c)
    c.close()
    assert closed and len(replies) == 1, replies
    check(replies[0], 554, "5.5.0", "Error: SMTP protocol synchronization")
    time.sleep(1.5)
    assert not by_subject(pf, tok)
    assert "x@remote.example" not in pf.maillog()
    assert "x@y.example" not in pf.maillog()
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_053_legitimate_pipelining_mixed_answers(pf, main):
    tok = token("053")
    c = connect(main)
    assert "PIPELINING" in ehlo(c)
    c.send(b"MAIL FROM:<a@example.net>\r\n"
           b"RCPT TO:<alice@example.com>\r\n"
           b"RCPT TO:<nouser@example.com>\r\n"
           b"RCPT TO:<x@remote.example>\r\n"
           b"DATA\r\n")
    r = c.read_replies(5, timeout=30)
    check(r[0], 250, "2.1.0", "Ok")
    check(r[1], 250, "2.1.5")
    check(r[2], 550, "5.1.1")
    assert "<nouser@example.com>" in r[2][1][0], r[2]
    check(r[3], 554, "5.7.1")
    assert "<x@remote.example>: Relay access denied" in r[3][1][0], r[3]
    assert r[4] == (354, ["End data with <CR><LF>.<CR><LF>"]), r[4]
    c.send(dot_stuff(message(tok)) + b".\r\n")
    queued(c.read_reply(timeout=30))
    # all recipients refused: DATA gets 554 5.5.1
    c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<nouser@example.com>\r\nDATA\r\n")
    r = c.read_replies(3, timeout=30)
    check(r[0], 250, "2.1.0")
    check(r[1], 550, "5.1.1")
    check(r[2], 554, "5.5.1", "Error: no valid recipients")
    check(c.cmd("QUIT"), 221, "2.0.0")
    c.close()
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert [m.user for m in got] == ["alice"]
    assert_alive(main)


@pytest.mark.deadline(90)
def test_hostile_054_pipelined_noop_flood_non_reading_client(pf, main):
    """100,000 NOOPs in one burst from a client that reads nothing:
    sluice stops reading (bounded memory), other sessions are served,
    the flood ends at the write deadline (smtpd_timeout=3s)."""
    wpid = worker_pid(main)
    rss0 = rss_kb(wpid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("127.0.0.54", 0))
    s.connect((main.host, main.port))
    s.settimeout(10)
    hello = b""
    while not hello.endswith(b"ESMTP\r\n"):
        hello += s.recv(4096)
    s.sendall(b"EHLO flood.example\r\n")
    while not re.search(rb"250 8BITMIME\r\n$", hello):
        hello += s.recv(4096)
    data = b"NOOP\r\n" * 100000
    s.setblocking(False)
    sent, peak = 0, rss0
    t0 = time.monotonic()
    served = None
    while sent < len(data) and time.monotonic() - t0 < 12:
        try:
            sent += s.send(data[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.02)
        except OSError:
            break
        peak = max(peak, rss_kb(wpid))
    peak = max(peak, rss_kb(wpid))
    # another client is served while the flood sits there
    t1 = time.monotonic()
    with connect(main, source="127.0.0.55") as o:
        ehlo(o)
        check(o.cmd("NOOP"), 250, "2.0.0", "Ok")
        check(o.cmd("QUIT"), 221, "2.0.0")
    served = time.monotonic() - t1
    peak = max(peak, rss_kb(wpid))
    # now read what sluice answered, until it closed
    s.setblocking(True)
    s.settimeout(15)
    got = b""
    closed = False
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            got += d
    except (socket.timeout, ConnectionResetError) as e:
        closed = not isinstance(e, socket.timeout)
    s.close()
    print("flood: sent %d of %d bytes; %d replies read; rss %d -> peak %d kB; "
          "other session %.2fs" % (sent, len(data), got.count(b"\r\n"), rss0, peak,
                                   served or -1))
    assert served is not None and served < 3, "other session not served: %r" % served
    assert closed, "flood session still open after its write deadline"
    lines = got.split(b"\r\n")
    if lines and lines[-1] and b"250 2.0.0 Ok".startswith(lines[-1]):
        lines = lines[:-1]  # a reply cut off when sluice gave up writing
    noop_replies = [l for l in lines if l]
    # NOOPs are junk: past sluice's junk-command limit each is an error,
    # and the session ends with 421 4.7.0 at the hard error limit (the
    # catalogue's answer, as Postfix's smtpd_junk_command_limit).
    ok = b"250 2.0.0 Ok"
    closing = b"421 4.7.0 sluice.test Error: too many errors"
    assert noop_replies and all(l in (ok, closing) for l in noop_replies), \
        set(noop_replies)
    assert len(noop_replies) < 100000
    limit = rss_limit(main, 8192)
    assert peak - rss0 < limit, "worker RSS grew %d kB" % (peak - rss0)
    assert_alive(main)


@pytest.mark.deadline(30)
def test_hostile_055_commands_after_quit(pf, main):
    c = connect(main, source="127.0.0.55")
    ehlo(c)
    c.send(b"QUIT\r\nMAIL FROM:<x@y.example>\r\n")
    replies, closed = read_until_close(c)
    c.close()
    assert closed, replies
    assert len(replies) == 1, replies
    check(replies[0], 221, "2.0.0", "Bye")
    assert_alive(main)


@pytest.mark.deadline(90)
def test_hostile_056_sluice_pipelining_toward_backend(pf, fresh):
    """Through a recording relay: greeting read before anything; nothing
    after EHLO, XCLIENT, DATA (before 354) until their reply; no HELO; and
    no pipelining complaint in Postfix's log. (Postfix offers CHUNKING:
    the messages go as BDAT LAST, its octets right behind it.)"""
    proxy = RecProxy(pf.port)
    try:
        sl = fresh("rec56", proxy.port, backend_pool_size="2")
        toks = []
        for i in range(3):
            tok = token("056-%d" % i)
            toks.append(tok)
            c = connect(sl)
            ehlo(c)
            c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.com>\r\n"
                   b"RCPT TO:<nouser@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
            r = c.read_replies(5, timeout=30)
            assert [x[0] for x in r] == [250, 250, 550, 250, 354], r
            c.send(dot_stuff(message(tok)) + b".\r\n")
            queued(c.read_reply(timeout=30))
            check(c.cmd("QUIT"), 221, "2.0.0")
            c.close()
        # HELO client (PROTO=SMTP in XCLIENT)
        c = connect(sl)
        assert c.cmd("HELO client23.example")[0] == 250
        tok = token("056-helo")
        toks.append(tok)
        queued(send_message(c, tok))
        c.close()
        got = pf.wait_messages(7, 20, lambda m: m.subject in toks)
        assert len(got) == 7, got
        time.sleep(0.5)
        assert proxy.conns, "no backend connection went through the relay"
        bad = proxy.violations()
        assert not bad, bad
        log = pf.maillog()
        for pat in ("improper command pipelining", "SMTP protocol synchronization"):
            assert pat not in log, [l for l in log.splitlines() if pat in l]
        assert_alive(sl)
    finally:
        proxy.stop()


# =================================================================== F

@pytest.mark.deadline(60)
def test_hostile_057_dot_stuffing_round_trip(pf, main):
    lines = [b".", b"..", b"...", b". ", b".x", b"x."]
    body = b"\r\n".join(lines) + b"\r\n"
    # lines that start with '.' right at 4 KiB and 16 KiB boundaries of
    # what the client sends (header + body, dot-stuffed)
    tok = token("057")
    head = len(dot_stuff(message(tok, b"")))
    for boundary in (4096, 8192, 16384, 65536):
        pad = boundary - head - len(dot_stuff(body)) - 2
        if pad > 0:
            body += b"p" * pad + b"\r\n"
        body += b".edge %d\r\n..\r\n" % boundary
    msg = message(tok, body)
    stuffed = dot_stuff(msg)
    assert b"\r\n.\r\n" not in stuffed
    assert harness.crlf_to_lf(stuffed).count(b"\n.") >= 10
    c = connect(main)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    assert c.cmd("DATA")[0] == 354
    c.send(stuffed + b".\r\n")
    queued(c.read_reply(timeout=30))
    c.close()
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1
    assert got[0].raw.endswith(crlf_to_lf(msg)), "dot-stuffing round trip changed the body"
    assert_alive(main)


@pytest.mark.deadline(120)
def test_hostile_058_long_content_lines(pf, main):
    rnd = random.Random(58)
    alpha = b"abcdefghijklmnopqrstuvwxyz0123456789"
    l1001 = bytes(rnd.choice(alpha) for _ in range(1001))
    l64k = bytes(rnd.choice(alpha) for _ in range(4096)) * 16
    l5m = bytes(rnd.choice(alpha) for _ in range(4096)) * 1280
    body = b"start\r\n" + l1001 + b"\r\n" + l64k + b"\r\n" + l5m + b"\r\nend\r\n"
    tok = token("058")
    wpid = worker_pid(main)
    rss0 = rss_kb(wpid)
    c = connect(main)
    ehlo(c)
    queued(send_message(c, tok, body, timeout=60))
    rss1 = rss_kb(wpid)
    c.close()
    got = pf.wait_messages(1, 30, lambda m: m.subject == tok)
    assert len(got) == 1
    assert got[0].raw.endswith(crlf_to_lf(message(tok, body))), "long lines changed"
    print("rss %d -> %d kB" % (rss0, rss1))
    assert rss1 - rss0 < rss_limit(main, 4096), \
        "a 5 MB line grew the worker by %d kB" % (rss1 - rss0)
    assert_alive(main)


@pytest.mark.deadline(30)
def test_hostile_059_bdat_without_final_crlf(pf, main):
    c = connect(main)
    assert "CHUNKING" not in ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    c.send(b"BDAT 3 LAST\r\nabc")
    check(c.read_reply(), 502, "5.5.1", "Error: command not implemented")
    c.send(b"\r\nRSET\r\n")
    check(c.read_reply(), 500, "5.5.2", "Error: command not recognized")
    check(c.read_reply(), 250, "2.0.0", "Ok")
    check(c.cmd("QUIT"), 221, "2.0.0")
    c.close()
    assert_alive(main)


@pytest.mark.deadline(90)
def test_hostile_060_size_limits(pf, main):
    c = connect(main)
    ext = ehlo(c)
    sizes = [e for e in ext if e.startswith("SIZE")]
    assert sizes == ["SIZE %d" % SIZE_LIMIT], ext
    assert SIZE_LIMIT <= 10240000  # Postfix's message_size_limit
    # SIZE over the limit: 552 5.3.4 at MAIL
    check(c.cmd("MAIL FROM:<a@example.net> SIZE=%d" % (SIZE_LIMIT + 1)), 552, "5.3.4",
          "Message size exceeds fixed maximum message size")
    # without SIZE: read to the end, then 552 5.3.4; still in step
    tok = token("060")
    body = (b"y" * 998 + b"\r\n") * (SIZE_LIMIT // 1000 + 500)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    assert c.cmd("DATA")[0] == 354
    c.send(dot_stuff(message(tok, body)) + b".\r\n")
    check(c.read_reply(timeout=60), 552, "5.3.4", "Error: message file too big")
    check(c.cmd("NOOP"), 250, "2.0.0", "Ok")
    # the session goes on: a message within the limit is delivered
    tok2 = token("060ok")
    queued(send_message(c, tok2))
    c.close()
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok2)
    time.sleep(1)
    assert not by_subject(pf, tok)
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_061_nul_and_8bit_in_content(pf, main):
    body = b"a\x00b\r\n" + bytes(range(0x80, 0x100)) + b"\r\nnul at end\x00\r\n"
    tok = token("061")
    c = connect(main)
    ehlo(c)
    queued(send_message(c, tok, body))  # no BODY=8BITMIME
    c.close()
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1
    assert got[0].raw.endswith(crlf_to_lf(message(tok, body))), got[0].raw[-400:]
    assert_alive(main)


@pytest.mark.deadline(90)
def test_hostile_062_hostile_headers_not_parsed(pf, main):
    tok = token("062")
    cont = b"X-Cont: start\r\n" + b"\tcontinued\r\n" * 20000
    big = b"X-Big: " + b"h" * (200 * 1024) + b"\r\n"
    msg = (b"From mailbox-line Fri Nov 27 00:00:00 2026\r\n"
           b"Subject: " + tok.encode() + b"\r\n" + cont + big +
           b"\r\nbody after hostile headers\r\n")
    wpid = worker_pid(main)
    rss0 = rss_kb(wpid)
    c = connect(main)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    assert c.cmd("DATA")[0] == 354
    c.send(dot_stuff(msg) + b".\r\n")
    queued(c.read_reply(timeout=60))
    check(c.cmd("NOOP"), 250, "2.0.0")
    c.close()
    rss1 = rss_kb(wpid)
    assert rss1 - rss0 < rss_limit(main, 4096), (rss0, rss1)
    assert_alive(main)


@pytest.mark.deadline(30)
def test_hostile_063_bdat_syntax_not_offered(pf, main):
    c = connect(main)
    assert "CHUNKING" not in ehlo(c)
    for line in ("BDAT", "BDAT -1", "BDAT 1x", "BDAT 99999999999999999999",
                 "BDAT 10 LAST junk", "BDAT 10 FIRST", "BDAT 10 last"):
        check(c.cmd(line), 502, "5.5.1", "Error: command not implemented")
    check(c.cmd("QUIT"), 221, "2.0.0")
    c.close()
    assert_alive(main)


@pytest.mark.deadline(30)
def test_hostile_064_empty_bdat_chunks(pf, main):
    c = connect(main)
    ehlo(c)
    check(c.cmd("BDAT 0 LAST"), 502, "5.5.1", "Error: command not implemented")
    # repeated: every one refused; the error limit (20) ends the abuse
    for i in range(18):
        check(c.cmd("BDAT 0"), 502, "5.5.1")
    c.send(b"BDAT 0\r\n")
    check(c.read_reply(), 502, "5.5.1")
    replies, closed = read_until_close(c)
    c.close()
    assert closed and len(replies) == 1, replies
    check(replies[0], 421, "4.7.0", "%s Error: too many errors" % harness.SLUICE_HOSTNAME)
    assert_alive(main)


@pytest.mark.deadline(30)
def test_hostile_065_in_step_after_bdat_error(pf, main):
    c = connect(main)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    # BDAT with no recipient, then pipelined chunks
    c.send(b"BDAT 5\r\nBDAT 5\r\nBDAT 0 LAST\r\nNOOP\r\n")
    for _ in range(3):
        check(c.read_reply(), 502, "5.5.1", "Error: command not implemented")
    check(c.read_reply(), 250, "2.0.0", "Ok")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    check(c.cmd("RSET"), 250, "2.0.0")
    check(c.cmd("QUIT"), 221, "2.0.0")
    c.close()
    assert_alive(main)


@pytest.mark.deadline(30)
def test_hostile_066_bdat_content_never_reaches_backend(pf, main):
    tok = token("066")
    payload = (b"Subject: " + tok.encode() + b"\r\n\r\nx\r\n.\r\n"
               b"MAIL FROM:<ceo@victim.example>\r\n")
    c = connect(main)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    c.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
    check(c.read_reply(), 502, "5.5.1", "Error: command not implemented")
    c.pending(1)
    c.close()
    time.sleep(1.5)
    assert not by_subject(pf, tok)
    assert "ceo@victim.example" not in pf.maillog()
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_067_mixing_bdat_data_mail_disconnect(pf, main):
    wpid = worker_pid(main)
    c = connect(main)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    check(c.cmd("BDAT 0"), 502, "5.5.1")
    # MAIL after (refused) BDAT: still in the transaction
    check(c.cmd("MAIL FROM:<b@example.net>"), 503, "5.5.1", "Error: nested MAIL command")
    # DATA after (refused) BDAT: the transaction is intact
    assert c.cmd("DATA") == (354, ["End data with <CR><LF>.<CR><LF>"])
    tok = token("067")
    c.send(dot_stuff(message(tok)) + b".\r\n")
    queued(c.read_reply(timeout=30))
    c.close()
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)
    base = fd_count(wpid)
    # disconnect in the middle of a chunk
    tok2 = token("067b")
    c = connect(main)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    c.send(b"BDAT 100 LAST\r\nSubject: " + tok2.encode() + b"\r\n")
    check(c.read_reply(), 502, "5.5.1")
    c.close()
    assert harness.wait_until(lambda: fd_count(wpid) <= base, 10), (base, fd_count(wpid))
    time.sleep(1)
    assert not by_subject(pf, tok2)
    assert_alive(main)


@pytest.mark.deadline(30)
def test_hostile_068_binarymime(pf, main):
    c = connect(main)
    ext = ehlo(c)
    assert "BINARYMIME" not in ext and "CHUNKING" not in ext, ext
    check(c.cmd("MAIL FROM:<a@example.net> BODY=BINARYMIME"), 555, "5.5.4",
          "Unsupported option")
    check(c.cmd("MAIL FROM:<a@example.net> BODY=8BITMIME"), 250, "2.1.0")
    c.close()
    assert_alive(main)


# =================================================================== G

@pytest.fixture(scope="module")
def fake_backend():
    fb = FakeBackend()
    yield fb
    fb.stop()


MALFORMED = [
    ("code_change", b"250-a\r\n550 b\r\n"),
    ("no_separator", b"250x\r\n"),
    ("bad_digit", b"2a0 x\r\n"),
    ("bare_lf", b"250 ok\nMAIL\r\n"),
    ("nul", b"250 a\x00b\r\n"),
    ("one_mb_line", b"250 " + b"x" * (1024 * 1024) + b"\r\n"),
    ("100k_lines", b"250-x\r\n" * 100000 + b"250 ok\r\n"),
    ("354_to_rcpt", b"354 go ahead\r\n"),
]


@pytest.mark.deadline(120)
def test_hostile_069_malformed_backend_replies(fake_backend, fresh):
    fb = fake_backend
    sl = fresh("fb69", fb.port, backend_pool_size="1", backend_timeout="5s")
    wpid = worker_pid(sl)
    rss0 = rss_kb(wpid)
    results = {}
    for name, raw in MALFORMED:
        fb.rcpt_reply = raw
        c = connect(sl)
        ehlo(c)
        check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
        results[name] = c.cmd("RCPT TO:<alice@example.com>", timeout=20)
        # the session itself goes on
        check(c.cmd("NOOP"), 250, "2.0.0")
        c.close()
    fb.rcpt_reply = b"250 2.1.5 Ok\r\n"
    rss1 = rss_kb(wpid)
    bad = {n: r for n, r in results.items()
           if r != (451, ["4.3.0 Error: mail server protocol error, try again later"])}
    assert not bad, "not 451 4.3.0: %r" % {n: (r[0], [x[:80] for x in r[1][:3]])
                                            for n, r in bad.items()}
    assert rss1 - rss0 < rss_limit(sl, 8192), (rss0, rss1)
    # and a good reply afterwards still works (a fresh pool connection)
    c = connect(sl)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>", timeout=20), 250, "2.1.5", "Ok")
    c.close()
    assert_alive(sl)


@pytest.mark.deadline(30)
def test_hostile_070_replies_never_echo_client_input(pf, main):
    c = connect(main)
    ehlo(c)
    c.send(b"FOO <script>\x1b[2J\r\n")
    r = c.read_reply()
    check(r, 500, "5.5.2")
    assert r[1] in (["5.5.2 Error: command not recognized"], ["5.5.2 Error: bad syntax"]), r
    raw = c.transcript[-1]
    assert b"script" not in raw and b"\x1b" not in raw, raw
    c.send(b"MAIL FROM:<a b\x1b[31m@x.example>\r\n")
    r = c.read_reply()
    assert r in ((501, ["5.1.7 Bad sender address syntax"]),
                 (500, ["5.5.2 Error: bad syntax"])), r
    raw = c.transcript[-1]
    assert b"x.example" not in raw and b"\x1b" not in raw, raw
    check(c.cmd("MAIL FROM:<\"<script>\"@x.example> FOO=<b>"), 555, "5.5.4",
          "Unsupported option")
    assert b"script" not in c.transcript[-1]
    c.close()
    assert_alive(main)


def _raw_controls(text_bytes):
    return sorted({b for b in text_bytes if (b < 0x20 and b != 0x0a) or b == 0x7f})


@pytest.mark.deadline(60)
def test_hostile_071_log_injection_escaped(pf, main):
    src = "127.0.0.71"
    c = connect(main, source=src)
    for helo in (b"evil\x1b[31m.example", b"%n%s%s%n.example",
                 b"a\rsession=999 client=6.6.6.6 forged.example",
                 b"h" * 255):
        c.send(b"EHLO " + helo + b"\r\n")
        code, lines = c.read_reply()
        assert code in (250, 500, 501), (helo, code, lines)
        if code == 501:
            check((code, lines), 501, "5.5.2", "Syntax: EHLO hostname")
        if code == 500:
            check((code, lines), 500, "5.5.2", "Error: bad syntax")
    ehlo(c, "ok.example")
    c.send(b"MAIL FROM:<a\x7fb@example.net>\r\n")
    r = c.read_reply()
    assert r[0] in (250, 501, 500), r
    if r[0] == 250:
        check(r, 250, "2.1.0")
        c.cmd("RSET")
    c.send(b"XYZZY \x1b]0;pwned\x07 %n%n\r\n")
    check(c.read_reply(), 500, "5.5.2", "Error: bad syntax")
    c.send(b"XYZZY %n%s%s%n\r\n")
    check(c.read_reply(), 500, "5.5.2", "Error: command not recognized")
    check(c.cmd("QUIT"), 221, "2.0.0")
    c.close()
    time.sleep(0.5)
    with open(main.log_path, "rb") as f:
        raw = f.read()
    mine = [l for l in raw.split(b"\n") if b"client=" + src.encode() + b" " in l]
    assert mine, "no log lines for %s" % src
    bad = [l for l in raw.split(b"\n") if _raw_controls(l)]
    assert not bad, "raw control bytes in sluice's log: %r" % bad[:5]
    assert b"6.6.6.6" not in raw or all(b"session=999 " not in l[:40]
                                        for l in raw.split(b"\n")), \
        "a forged log line"
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_072_client_text_in_backend_reply(fake_backend, fresh):
    """A backend reply that carries client bytes (including what looks like
    a second reply) is framed strictly: the stray line is never taken as
    the answer to a later command."""
    fb = fake_backend

    def answer(addr):
        if addr.startswith(b"evil"):
            return (b"550 5.1.1 <" + addr + b">: Recipient address rejected\r\n"
                    b"250 2.1.5 Ok\r\n")
        if addr.startswith(b"esc"):
            return b"550 5.1.1 <\x1b[2J" + addr + b">: Recipient address rejected\r\n"
        return b"550 5.1.1 <" + addr + b">: Recipient address rejected\r\n"
    fb.rcpt_reply = answer
    try:
        sl = fresh("fb72", fb.port, backend_pool_size="1", backend_timeout="5s")
        c = connect(sl)
        ehlo(c)
        check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
        r1 = c.cmd("RCPT TO:<evil-250-ok@example.com>", timeout=20)
        # strict framing: the reply is relayed as the 550 it is, or the
        # connection is given up (451; case 69 checks which 451)
        assert r1[0] in (550, 451), r1
        if r1[0] == 550:
            check(r1, 550, "5.1.1")
        else:
            assert r1[1][0].split(" ")[0] in ("4.3.0", "4.4.2"), r1
        # the stray "250 2.1.5 Ok" must not answer this one
        check(c.cmd("RCPT TO:<plain@example.com>", timeout=20), 550, "5.1.1",
              "<plain@example.com>: Recipient address rejected")
        check(c.cmd("RCPT TO:<plain2@example.com>", timeout=20), 550, "5.1.1",
              "<plain2@example.com>: Recipient address rejected")
        r3 = c.cmd("RCPT TO:<esc@example.com>", timeout=20)
        assert b"\x1b" not in c.transcript[-1], c.transcript[-1]
        assert r3[0] in (550, 451), r3
        if r3[0] == 550:
            check(r3, 550, "5.1.1")
        else:
            assert r3[1][0].split(" ")[0] in ("4.3.0", "4.4.2"), r3
        check(c.cmd("NOOP"), 250, "2.0.0")
        c.close()
        assert_alive(sl)
    finally:
        fb.rcpt_reply = b"250 2.1.5 Ok\r\n"


# =================================================================== H

@pytest.mark.deadline(90)
def test_hostile_073_connection_flood_one_address(pf, main):
    src = "127.0.0.73"
    socks, firsts = [], []
    try:
        for i in range(200):
            s = socket.socket()
            s.bind((src, 0))
            s.settimeout(10)
            s.connect((main.host, main.port))
            socks.append(s)
        for s in socks:
            try:
                d = b""
                while b"\r\n" not in d:
                    x = s.recv(4096)
                    if not x:
                        break
                    d += x
                firsts.append(d.split(b"\r\n")[0].decode(errors="replace"))
            except OSError as e:
                firsts.append("error %r" % e)
        # another address is still served
        with connect(main, source="127.0.0.74") as o:
            ehlo(o)
            check(o.cmd("QUIT"), 221, "2.0.0")
    finally:
        for s in socks:
            s.close()
    greeted = [f for f in firsts if f.startswith("220 ")]
    refused = [f for f in firsts if f.startswith("421 ")]
    print("200 connections from one address: %d greeted, %d refused, other %r"
          % (len(greeted), len(refused),
             [f for f in firsts if not f.startswith(("220 ", "421 "))][:3]))
    # Postfix's wording names the address; sluice says "your address"
    want = "421 4.7.0 %s Error: too many connections from " % harness.SLUICE_HOSTNAME
    assert refused and all(f.startswith(want) for f in refused), (refused[:3], want)
    assert len(greeted) <= 50, "%d sessions from one address" % len(greeted)
    assert len(greeted) + len(refused) == 200, firsts[:5]
    assert_alive(main)


@pytest.mark.deadline(120)
def test_hostile_074_out_of_descriptors(pf, fresh):
    """The worker runs out of file descriptors (RLIMIT_NOFILE lowered with
    prlimit): the accept loop does not spin, an open session still reaches
    the backend, the flood is answered or closed, and new clients are
    served again afterwards."""
    sl = fresh("fd74", pf.port, smtpd_timeout="4s", nofile=64)
    wpid = worker_pid(sl)
    # a session opened before the flood, mid-transaction
    tok = token("074")
    c = connect(sl)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    base = fd_count(wpid)
    with open("/proc/%d/limits" % wpid) as f:
        lim = int(re.search(r"Max open files\s+(\d+)", f.read()).group(1))
    assert base < lim - 8, "worker already uses %d of %d fds" % (base, lim)
    flood = []
    try:
        cpu0, t0 = cpu_ticks(wpid), time.monotonic()
        for i in range(60):
            s = socket.socket()
            s.bind(("127.0.0.%d" % (140 + i % 20), 0))
            s.settimeout(5)
            s.connect((sl.host, sl.port))
            flood.append(s)
        time.sleep(2.5)
        cpu = (cpu_ticks(wpid) - cpu0) / os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - t0
        # the open session still completes its message
        c.send(b"DATA\r\n")
        assert c.read_reply(timeout=20)[0] == 354
        c.send(dot_stuff(message(tok)) + b".\r\n")
        queued(c.read_reply(timeout=30))
        c.close()
        # every flood connection gets 220 / 421 or is closed, within bounds
        answers = []
        for s in flood:
            s.settimeout(25)
            try:
                d = s.recv(4096)
                answers.append(d.split(b"\r\n")[0].decode(errors="replace") or "closed")
            except socket.timeout:
                answers.append("hang")
            except OSError:
                answers.append("closed")
    finally:
        for s in flood:
            s.close()
    print("fd limit %d: cpu %.2fs in %.1fs; answers %r" % (
        lim, cpu, wall, sorted(set(answers))))
    assert cpu < 0.5 * wall, "accept loop spun: %.2f s CPU in %.1f s" % (cpu, wall)
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert "hang" not in answers, answers
    ok = {"220 %s ESMTP" % harness.SLUICE_HOSTNAME, "closed",
          "421 4.3.0 %s Error: out of resources, closing transmission channel"
          % harness.SLUICE_HOSTNAME,
          "421 4.4.2 %s Error: timeout exceeded" % harness.SLUICE_HOSTNAME}
    assert set(answers) <= ok, set(answers) - ok
    assert re.search(r"accept failed: .*(Too many open files|EMFILE)", sl.log()), \
        sl.log()[-2000:]
    with connect(sl, source="127.0.0.75") as o:
        ehlo(o)
        check(o.cmd("QUIT"), 221, "2.0.0")
    assert_alive(sl)


@pytest.mark.deadline(60)
def test_hostile_075_slowloris(pf, main):
    to = "421 4.4.2 %s Error: timeout exceeded" % harness.SLUICE_HOSTNAME
    # (a) silent after the greeting
    c = connect(main, source="127.0.0.75")
    t0 = time.monotonic()
    r = c.read_reply(timeout=10)
    took = time.monotonic() - t0
    assert is_closed(c, 3)
    c.close()
    check(r, 421, "4.4.2", to[10:])
    assert 2.5 <= took <= 5, took
    # (b) one byte a second, a command that never ends: the deadline
    # covers the whole command, not each read
    c = connect(main, source="127.0.0.75")
    ehlo(c)
    t0 = time.monotonic()
    got = None
    for ch in b"NOOP " + b"x" * 20:
        try:
            c.send(bytes([ch]))
        except OSError:
            break
        if c.pending(1.0):
            got = c.read_reply(timeout=1)
            break
    took = time.monotonic() - t0
    c.close()
    assert got is not None, "a trickling client was never timed out (%.0f s)" % took
    check(got, 421, "4.4.2", to[10:])
    assert took <= 3 + 2, "timed out only after %.1f s" % took
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_076_client_that_never_reads(pf, main):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.bind(("127.0.0.76", 0))
    s.connect((main.host, main.port))
    for line in (b"EHLO never.example\r\n", b"MAIL FROM:<a@example.net>\r\n",
                 b"RCPT TO:<alice@example.com>\r\n"):
        s.sendall(line)
        time.sleep(0.4)
    s.setblocking(False)
    t0 = time.monotonic()
    sent = 0
    data = b"HELP\r\n" * 500000
    closed_at = None
    while time.monotonic() - t0 < 15:
        try:
            n = s.send(data[sent:sent + 8192])
            sent += n
        except BlockingIOError:
            time.sleep(0.05)
        except OSError:
            closed_at = time.monotonic() - t0
            break
        if sent >= len(data):
            break
    # the pool is not held while sluice waits on this client
    tok = token("076")
    with connect(main, source="127.0.0.77") as o:
        ehlo(o)
        queued(send_message(o, tok))
    s.setblocking(True)
    s.settimeout(15)
    got, eof = b"", False
    try:
        while True:
            d = s.recv(65536)
            if not d:
                eof = True
                break
            got += d
    except ConnectionResetError:
        eof = True
    except socket.timeout:
        pass
    took = time.monotonic() - t0
    s.close()
    print("never-reading client: sent %d of %d; closed after %.1fs (send error at %r)"
          % (sent, len(data), took, closed_at))
    n_help = got.count(b"214 2.0.0 Commands:")
    print("214 replies read: %d of %d HELP sent" % (n_help, sent // 6))
    assert n_help < 50000, "sluice answered every HELP of a client that never reads"
    assert eof, "a client that never reads was never closed"
    assert took < 3 + 12
    assert b"250 2.1.5 Ok\r\n214 2.0.0 Commands:" in got, got[:600]
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert_alive(main)


@pytest.mark.deadline(120)
def test_hostile_077_shaped_sender_within_sender_timeouts(pf, fresh, ek_dir):
    """A shaped client (deny list) that behaves like a legitimate sender:
    every stage completes well inside Postfix's smtp_*_timeout values; the
    body is read at full speed."""
    deny = os.path.join(ek_dir, "deny77.txt")
    with open(deny, "w") as f:
        f.write("127.0.0.77/32\n")
    os.chmod(deny, 0o644)
    sl = fresh("shape77", pf.port, cidr_deny_file=deny, shape_threshold="3",
               shape_rate="50", greet_wait="1s", shape_time="90s")
    stages = {}
    tok = token("077")
    body = (b"z" * 78 + b"\r\n") * 3000  # 240 kB, far beyond kernel buffers at 50 B/s
    t = time.monotonic()
    c = SmtpRaw(sl.host, sl.port, source="127.0.0.77", timeout=120)
    assert c.read_reply()[0] == 220
    stages["greeting"] = time.monotonic() - t
    t = time.monotonic()
    ehlo(c, "mx.sender.example")
    stages["ehlo"] = time.monotonic() - t
    t = time.monotonic()
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    stages["mail"] = time.monotonic() - t
    t = time.monotonic()
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    stages["rcpt"] = time.monotonic() - t
    t = time.monotonic()
    assert c.cmd("DATA")[0] == 354
    stages["data"] = time.monotonic() - t
    t = time.monotonic()
    c.sock.settimeout(60)
    c.send(dot_stuff(message(tok, body)) + b".\r\n")
    stages["body_write"] = time.monotonic() - t
    t = time.monotonic()
    queued(c.read_reply(timeout=120))
    stages["end_of_data"] = time.monotonic() - t
    c.close()
    print("shaped stages (s): %r" % {k: round(v, 2) for k, v in stages.items()})
    assert re.search(r"client=127\.0\.0\.77 SHAPED ", sl.log()), sl.log()[-2000:]
    limits = {"greeting": 300, "ehlo": 300, "mail": 300, "rcpt": 300, "data": 120,
              "body_write": 180, "end_of_data": 600}
    for k, v in stages.items():
        assert v < limits[k] / 4, "%s took %.1f s (sender limit %d s)" % (k, v, limits[k])
    assert stages["body_write"] < 10, "body not read at full speed: %.1f s" % stages["body_write"]
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert_alive(sl)


@pytest.mark.deadline(150)
def test_hostile_078_memory_of_large_transactions(pf, main):
    wpid = worker_pid(main)
    rss0 = rss_kb(wpid)
    n = 4
    body = (b"m" * 998 + b"\r\n") * int(SIZE_LIMIT * 0.9 // 1000)
    toks = [token("078-%d" % i) for i in range(n)]
    results, peak = {}, [rss0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(wpid))
            stop.wait(0.05)

    def client(i):
        try:
            with connect(main, source="127.0.0.%d" % (160 + i), timeout=90) as c:
                ehlo(c)
                results[i] = send_message(c, toks[i], body, timeout=90)
        except Exception as e:
            results[i] = e
    st = threading.Thread(target=sample, daemon=True)
    st.start()
    ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    stop.set()
    st.join(2)
    print("4 x %d kB messages: rss %d -> peak %d kB" % (len(body) // 1024, rss0, peak[0]))
    for i in range(n):
        assert not isinstance(results.get(i), Exception), results
        queued(results[i])
    # spilled to disk beyond message_memory_max (256k): far below 4 x 5.4 MB
    limit = rss_limit(main, 16 * 1024)
    assert peak[0] - rss0 < limit, "RSS grew %d kB" % (peak[0] - rss0)
    assert len(pf.wait_messages(n, 60, lambda m: m.subject in toks)) == n
    # recipients: many 250-octet paths, refused by the backend, memory flat
    c = connect(main)
    ehlo(c)
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    for i in range(100):
        lp = ("r%03d" % i) + "x" * 60
        dom = ".".join(["d" * 60, "e" * 60, "f" * 50, "remote", "example"])
        check(c.cmd("RCPT TO:<%s@%s>" % (lp, dom)), 554, "5.7.1")
    check(c.cmd("QUIT"), 221, "2.0.0")
    c.close()
    assert_alive(main)


@pytest.mark.deadline(150)
def test_hostile_079_many_idle_shaped_sessions(pf, fresh):
    n = 3000
    sl = fresh("idle79", pf.port, shape_threshold="1", weight_ptr_missing="1",
               greet_wait="0s", smtpd_timeout="120s", backend_pool_size="2")
    wpid = worker_pid(sl)
    time.sleep(0.5)
    rss0, fd0 = rss_kb(wpid), fd_count(wpid)
    socks = []
    t0 = time.monotonic()
    try:
        for i in range(n):
            s = socket.socket()
            s.bind(("127.0.%d.%d" % (10 + i // 250, 1 + i % 250), 0))
            s.settimeout(5)
            try:
                s.connect((sl.host, sl.port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            if time.monotonic() - t0 > 30:
                break
        ok = harness.wait_until(lambda: fd_count(wpid) - fd0 >= len(socks) * 0.98, 20, 0.25)
        time.sleep(4)  # greetings (shaped) and DNS settle
        rss1, fd1 = rss_kb(wpid), fd_count(wpid)
        shaped = len(re.findall(r" SHAPED score=", sl.log()))
    finally:
        for s in socks:
            s.close()
    per = (rss1 - rss0) * 1024 / max(1, len(socks))
    print("%d idle sessions: fds %d -> %d, rss %d -> %d kB, %.0f bytes/session, "
          "%d shaped" % (len(socks), fd0, fd1, rss0, rss1, per, shaped))
    assert ok, "sluice held only %d of %d sessions" % (fd1 - fd0, len(socks))
    assert shaped >= len(socks) * 0.9, "only %d sessions shaped" % shaped
    assert per <= (32768 if is_san(sl) else 8192), \
        "%.0f bytes of RSS per idle shaped session" % per
    assert_alive(sl)


@pytest.mark.deadline(120)
def test_hostile_080_event_loop_latency_under_tls_handshake_flood(pf, fresh):
    import ssl
    sl = fresh("tls80", pf.port, tls=True, smtpd_timeout="30s")
    ctx = harness.unverified_tls_context()
    stop = threading.Event()
    done = [0, 0]

    def flooder(k):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                with SmtpRaw(sl.host, sl.port, source="127.0.3.%d" % (1 + (k * 37 + i) % 250),
                             timeout=10) as c:
                    c.read_reply()
                    c.cmd("EHLO flood.example")
                    if c.cmd("STARTTLS")[0] == 220:
                        c.starttls(ctx)
                        done[0] += 1
            except (OSError, harness.SmtpError, ssl.SSLError):
                done[1] += 1
    ths = [threading.Thread(target=flooder, args=(k,), daemon=True) for k in range(8)]
    lat = []
    c = connect(sl)
    ehlo(c)
    for t in ths:
        t.start()
    t_end = time.monotonic() + 8
    probes = 0
    while time.monotonic() < t_end:
        if probes and probes % 50 == 0:
            # a fresh probe session before sluice's junk-command limit
            c.close()
            c = connect(sl)
            ehlo(c)
        t0 = time.monotonic()
        check(c.cmd("NOOP"), 250, "2.0.0")
        lat.append(time.monotonic() - t0)
        probes += 1
        time.sleep(0.02)
    stop.set()
    for t in ths:
        t.join(15)
    c.close()
    lat.sort()
    p99 = lat[int(len(lat) * 0.99) - 1]
    print("%d handshakes (%d failed) in 8 s; NOOP p50 %.1f ms p99 %.1f ms max %.1f ms"
          % (done[0], done[1], lat[len(lat) // 2] * 1000, p99 * 1000, lat[-1] * 1000))
    assert done[0] > 50, done
    assert p99 < (0.5 if is_san(sl) else 0.2), "p99 event-loop latency %.0f ms" % (p99 * 1000)
    assert_alive(sl)


@pytest.mark.deadline(90)
def test_hostile_081_attacker_driven_dns_load(pf, fresh):
    """Many new addresses at once against a resolver that never answers:
    in-flight queries are capped, timeouts bounded, classification fails
    open; and an address seen twice is looked up once (cache)."""
    silent = FakeDns(answer=False)
    try:
        sl = fresh("dns81", pf.port, dns_servers="127.0.0.1:%d" % silent.port,
                   dns_timeout="1s", dnsbl_sites="bl.fake")
        n = 300
        socks = []
        t0 = time.monotonic()
        for i in range(n):
            s = socket.socket()
            s.bind(("127.0.4.%d" % (1 + i % 250) if i < 250 else "127.0.5.%d" % (i - 249), 0))
            s.settimeout(20)
            s.connect((sl.host, sl.port))
            socks.append(s)
        time.sleep(0.8)
        with silent.lock:
            inflight = len({q[1] for q in silent.queries if q[0] >= t0})
        greeted = 0
        for s in socks:
            try:
                if s.recv(100).startswith(b"220 "):
                    greeted += 1
            except OSError:
                pass
        took = time.monotonic() - t0
        for s in socks:
            s.close()
        print("%d clients: %d queries in flight after 0.8 s; %d greeted in %.1f s"
              % (n, inflight, greeted, took))
        assert greeted == n, "%d of %d not greeted (fail open)" % (n - greeted, n)
        # each lookup is bounded by dns_timeout (1 s, 2 attempts): no
        # greeting may wait much longer than that
        assert took < 6, "greetings took %.1f s" % took
        assert inflight <= 128, "%d DNS queries in flight at once" % inflight
    finally:
        silent.stop()
    # cache: the same address twice within seconds, one PTR query
    fd = FakeDns()
    try:
        fd.name_ptr("127.0.0.81", "c81.fake", "127.0.0.81")
        sl2 = fresh("dns81b", pf.port, dns_servers="127.0.0.1:%d" % fd.port)
        for _ in range(2):
            with connect(sl2, source="127.0.0.81") as c:
                ehlo(c)
                check(c.cmd("QUIT"), 221, "2.0.0")
        n_ptr = fd.count(b"81.0.0.127.in-addr.arpa")
        assert n_ptr == 1, "PTR of one address asked %d times in a few seconds" % n_ptr
    finally:
        fd.stop()


# =================================================================== I

@pytest.fixture(scope="module")
def fdns():
    d = FakeDns()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def dsl(inst, pf, fdns):
    """sluice whose only DNS server is the programmable FakeDns."""
    return inst.start("fdns", pf.port, dns_servers="127.0.0.1:%d" % fdns.port,
                      dns_timeout="1s", dnsbl_sites="bl.fake", smtpd_timeout="30s")


def _deliver_from(sl, pf, addr, tag, helo="mx.client.example", greet_timeout=15):
    tok = token(tag)
    t0 = time.monotonic()
    c = SmtpRaw(sl.host, sl.port, source=addr, timeout=20)
    code, text = c.read_reply(timeout=greet_timeout)
    greet = time.monotonic() - t0
    assert (code, text) == (220, ["%s ESMTP" % harness.SLUICE_HOSTNAME]), (code, text)
    ehlo(c, helo)
    queued(send_message(c, tok))
    check(c.cmd("QUIT"), 221, "2.0.0")
    c.close()
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1
    return got[0], greet


def _received_from(m):
    return m.get_all("Received")[0]


@pytest.mark.deadline(120)
def test_hostile_082_malformed_dns_answers(pf, dsl, fdns):
    R = fdns.reply

    def cname_loop(q, qe, n, t):
        return [(0, R(q, qe, answers=[
            dns_rr(5, dns_enc("loop1.fake")),
            dns_rr(5, dns_enc("loop2.fake"), name=dns_enc("loop1.fake")),
            dns_rr(5, dns_enc(n), name=dns_enc("loop2.fake"))]))]

    def compression_loop(q, qe, n, t):
        base = R(q, qe, answers=[])
        off = len(base) + 12  # where the RDATA of the first RR starts
        ptr = bytes([0xC0 | (off >> 8), off & 0xFF])
        rr = b"\xc0\x0c" + struct.pack(">HHIH", 12, 1, 60, 2) + ptr
        return [(0, base[:6] + struct.pack(">H", 1) + base[8:] + rr)]

    def lying_counts(q, qe, n, t):
        return [(0, R(q, qe, answers=[dns_rr(12, dns_enc("liar104.fake"))], ancount=60))]

    def zero_payload(q, qe, n, t):
        return [(0, b"")]

    def label_past_end(q, qe, n, t):
        rdata = bytes([63]) + b"abc"
        return [(0, R(q, qe, answers=[dns_rr(12, rdata)]))]

    def truncated(q, qe, n, t):
        return [(0, R(q, qe, tc=True))]

    def hundreds(q, qe, n, t):
        return [(0, R(q, qe, answers=[dns_rr(12, dns_enc("p%d.fake" % i))
                                      for i in range(300)]))]
    cases = {"127.0.0.101": None, "127.0.0.102": cname_loop,
             "127.0.0.103": compression_loop, "127.0.0.104": lying_counts,
             "127.0.0.105": zero_payload, "127.0.0.106": label_past_end,
             "127.0.0.107": truncated, "127.0.0.108": hundreds}
    fdns.name_ptr("127.0.0.101", "ok101.fake", "127.0.0.101")
    for i in range(300):
        fdns.rules[b"p%d.fake" % i] = (
            lambda q, qe, n, t: [(0, R(q, qe, answers=[dns_rr(1, dns_a("127.0.0.108"))]))]
            if t == 1 else None)
    for addr, fn in cases.items():
        if fn:
            fdns.ptr(addr, fn)
    names = {}
    for addr in cases:
        m, greet = _deliver_from(dsl, pf, addr, "082")
        names[addr] = _received_from(m)
        assert greet < 6, "%s: greeting after %.1f s" % (addr, greet)
        assert_alive(dsl)
    assert "(ok101.fake [127.0.0.101])" in names["127.0.0.101"], names
    for addr in ("127.0.0.102", "127.0.0.103", "127.0.0.104", "127.0.0.105",
                 "127.0.0.106", "127.0.0.107"):
        assert "(unknown [%s])" % addr in names[addr], (addr, names[addr])
    # hundreds of PTRs: one name, forward-confirmed, or unknown
    assert re.search(r"\((p\d+\.fake|unknown) \[127\.0\.0\.108\]\)", names["127.0.0.108"]), \
        names["127.0.0.108"]


# Known gap, kept visible: Debian 12's libevent 2.1.12 sends 0x20-mixed
# queries but accepted an answer whose question came back in lower case
# with the right query id. Fixing it needs a resolver that checks the
# echoed case (or sluice's own). strict: the day it passes, this fails and
# the marker must go.
@pytest.mark.xfail(strict=True, reason="evdns accepts a case-flattened forged answer (HOSTILE 83)")
@pytest.mark.deadline(60)
def test_hostile_083_spoofed_dns_answers(pf, dsl, fdns):
    R = fdns.reply

    def forged_first(q, qe, n, t):
        qid = struct.unpack(">H", q[:2])[0]
        return [(0, R(q, qe, answers=[dns_rr(12, dns_enc("forged.fake"))], qid=qid ^ 0x5a5a)),
                (0, R(q[:12] + q[12:qe].lower(), qe,
                      answers=[dns_rr(12, dns_enc("forged2.fake"))])
                 if q[12:qe] != q[12:qe].lower() else b""),
                (0.2, R(q, qe, answers=[dns_rr(12, dns_enc("real110.fake"))]))]
    fdns.ptr("127.0.0.110", forged_first)
    fdns.rules[b"real110.fake"] = lambda q, qe, n, t: [(0, R(q, qe, answers=[
        dns_rr(1, dns_a("127.0.0.110"))]))] if t == 1 else None
    for name in (b"forged.fake", b"forged2.fake"):
        fdns.rules[name] = lambda q, qe, n, t: [(0, R(q, qe, answers=[
            dns_rr(1, dns_a("127.0.0.110"))]))] if t == 1 else None
    start = len(fdns.queries)
    m, _ = _deliver_from(dsl, pf, "127.0.0.110", "083")
    assert "(real110.fake [127.0.0.110])" in _received_from(m), _received_from(m)
    for i in range(15):
        with SmtpRaw(dsl.host, dsl.port, source="127.0.0.%d" % (111 + i), timeout=10) as c:
            c.read_reply()
    with fdns.lock:
        qs = fdns.queries[start:]
    ids = [q[1] for q in qs]
    assert len(set(ids)) == len(ids), "repeated query ids: %r" % ids
    steps = {(b - a) % 65536 for a, b in zip(ids, ids[1:])}
    assert len(steps) > 3, "query ids are sequential: %r" % ids
    srcs = {q[4][1] for q in qs}
    mixed = [q[2] for q in qs if q[2] != q[2].lower() and q[2] != q[2].upper()]
    print("%d queries, %d source ports, 0x20 mixed-case names: %d"
          % (len(qs), len(srcs), len(mixed)))
    assert mixed, "no 0x20 case randomisation in %r" % [q[2] for q in qs[:5]]


@pytest.mark.deadline(60)
def test_hostile_084_dnsbl_answers_that_are_not_listings(pf, dsl, fdns):
    R = fdns.reply
    answers = {"127.0.0.120": "127.255.255.254", "127.0.0.121": "127.255.255.255",
               "127.0.0.122": "127.255.255.252", "127.0.0.123": "10.0.0.2",
               "127.0.0.124": "nxdomain", "127.0.0.125": "servfail",
               "127.0.0.126": "silent", "127.0.0.127": "127.0.0.2"}
    for addr, a in answers.items():
        name = ".".join(reversed(addr.split("."))) + ".bl.fake"
        fdns.name_ptr(addr, "h%s.fake" % addr.split(".")[3], addr)
        if a == "nxdomain":
            fn = None
        elif a == "servfail":
            fn = (lambda q, qe, n, t: [(0, R(q, qe, rcode=2))])
        elif a == "silent":
            fn = (lambda q, qe, n, t: [])
        else:
            fn = (lambda ip: lambda q, qe, n, t: [(0, R(q, qe, answers=[dns_rr(1, dns_a(ip))]))]
                  if t == 1 else None)(a)
        if fn:
            fdns.rules[name.encode()] = fn
    for addr in answers:
        _, greet = _deliver_from(dsl, pf, addr, "084")
        assert greet < 6, (addr, greet)
    time.sleep(0.5)
    log = dsl.log()
    for addr in answers:
        hit = re.search(r"client=%s DNSBL " % re.escape(addr), log)
        if addr == "127.0.0.127":
            assert hit, "a real listing (127.0.0.2) was not counted"
        else:
            assert not hit, "%s (%s) counted as a listing: %s" % (addr, answers[addr], hit.group(0))
    assert_alive(dsl)


@pytest.mark.deadline(90)
def test_hostile_085_dns_server_that_never_answers(pf, fresh):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        sl = fresh("silent85", pf.port, dns_servers="127.0.0.1:%d" % silent.getsockname()[1],
                   dns_timeout="1s", dnsbl_sites="bl.fake", greet_wait="0s")
        m, greet = _deliver_from(sl, pf, CLIENT23, "085", helo=CLIENT23_NAME,
                                 greet_timeout=20)
        print("greeting after %.1f s with a silent resolver" % greet)
        assert greet <= 6, "greeting delayed %.1f s by a silent resolver" % greet
        assert "(unknown [%s])" % CLIENT23 in _received_from(m), _received_from(m)
        assert harness.wait_until(
            lambda: re.search(r"client=%s port=\d+ name=\[TEMPUNAVAIL\] " % re.escape(CLIENT23),
                              sl.log()), 5), sl.log()[-2000:]
        assert not re.search(r"client=%s (DNSBL|NOPTR) " % re.escape(CLIENT23), sl.log())
        assert not re.search(r"client=%s SHAPED" % re.escape(CLIENT23), sl.log())
        assert_alive(sl)
    finally:
        silent.close()


@pytest.mark.deadline(60)
def test_hostile_086_dns_answer_after_session_gone(pf, dsl, fdns):
    R = fdns.reply

    def late(q, qe, n, t):
        return [(1.2, R(q, qe, answers=[dns_rr(12, dns_enc("late115.fake"))]))]
    fdns.ptr("127.0.0.115", late)
    fdns.rules[b"115.0.0.127.bl.fake"] = lambda q, qe, n, t: [(1.3, R(q, qe, answers=[
        dns_rr(1, dns_a("127.0.0.2"))]))]
    fdns.rules[b"late115.fake"] = lambda q, qe, n, t: [(0, R(q, qe, answers=[
        dns_rr(1, dns_a("127.0.0.115"))]))] if t == 1 else None
    wpid = worker_pid(dsl)
    base = fd_count(wpid)
    for i in range(40):
        s = socket.socket()
        s.bind(("127.0.0.115", 0))
        s.connect((dsl.host, dsl.port))
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    time.sleep(2.5)  # every late answer has arrived
    assert harness.wait_until(lambda: fd_count(wpid) <= base, 10), (base, fd_count(wpid))
    _deliver_from(dsl, pf, "127.0.0.101", "086")
    assert_alive(dsl)


@pytest.mark.deadline(60)
def test_hostile_087_forward_confirmed_reverse_dns(pf, dsl, fdns):
    fdns.name_ptr("127.0.0.111", "other111.fake", "127.0.0.99")   # different address
    fdns.name_ptr("127.0.0.112", "noaddr112.fake", None)          # no A record
    R = fdns.reply
    fdns.ptr("127.0.0.113", lambda q, qe, n, t: [(0, R(q, qe, answers=[
        dns_rr(12, b"\x0cbad\x1b[31m113\x04fake\x00")]))])
    fdns.ptr("127.0.0.114", lambda q, qe, n, t: [(0, R(q, qe, answers=[
        dns_rr(12, b"\x0ca b%n%s\x22114\x04fake\x00")]))])
    for bad in (b"bad\x1b[31m113.fake", b"a b%n%s\x22114.fake"):
        fdns.rules[bad.lower()] = lambda q, qe, n, t: [(0, R(q, qe, answers=[
            dns_rr(1, dns_a("127.0.0.113"))]))]
    for addr in ("127.0.0.111", "127.0.0.112", "127.0.0.113", "127.0.0.114"):
        m, _ = _deliver_from(dsl, pf, addr, "087")
        rcv = _received_from(m)
        assert "(unknown [%s])" % addr in rcv, (addr, rcv)
    log = pf.maillog()
    # 111/112 have a name that is not confirmed: [UNAVAILABLE]. evdns
    # cannot parse the PTR answers of 113/114 at all, and an unparsable
    # answer is the resolver's failure, [TEMPUNAVAIL] (issue 9): a client
    # controlling its PTR zone gains nothing by it that a SERVFAIL from
    # its own server would not give it too.
    for addr, name in (("127.0.0.111", "UNAVAILABLE"), ("127.0.0.112", "UNAVAILABLE"),
                       ("127.0.0.113", "TEMPUNAVAIL"), ("127.0.0.114", "TEMPUNAVAIL")):
        assert re.search(r"client=unknown\[%s\]" % re.escape(addr), log), addr
        assert re.search(r"client=%s port=\d+ name=\[%s\] " % (re.escape(addr), name),
                         dsl.log()), addr
    assert "Bad NAME syntax" not in log
    assert "\x1b" not in log and "\x1b" not in dsl.log()
    assert re.search(r"client=127\.0\.0\.111 PTRUNCONFIRMED ", dsl.log())
    assert_alive(dsl)


# =================================================================== K

PHASES = ("connect", "banner", "helo", "mail", "rcpt", "data", "content",
          "dot", "quit")


def _drive_to(sl, phase, tok, src):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(15)
    s.connect((sl.host, sl.port))
    c = SmtpRaw.__new__(SmtpRaw)
    c.sock, c.buf, c.transcript, c.timeout, c.tls = s, b"", [], 15, False
    if phase == "connect":
        return c
    c.read_reply()
    if phase == "banner":
        return c
    ehlo(c)
    if phase == "helo":
        return c
    check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
    if phase == "mail":
        return c
    check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
    if phase == "rcpt":
        return c
    assert c.cmd("DATA")[0] == 354
    if phase == "data":
        return c
    data = dot_stuff(message(tok, b"line\r\n" * 2000))
    if phase == "content":
        c.send(data[:len(data) // 2])
        return c
    c.send(data + b".\r\n")
    if phase == "dot":
        return c
    queued(c.read_reply(timeout=30))
    check(c.cmd("QUIT"), 221, "2.0.0")
    return c


@pytest.mark.deadline(120)
def test_hostile_101_disconnect_at_every_state(pf, main):
    src = "127.0.0.201"
    wpid = worker_pid(main)
    # warm up: one complete session, then measure the baseline
    _drive_to(main, "quit", token("101w"), src).close()
    time.sleep(1)
    base = fd_count(wpid)
    rss0 = rss_kb(wpid)
    order = list(PHASES) * 3
    random.Random(101).shuffle(order)
    toks = {}
    for i, phase in enumerate(order):
        tok = token("101-%s-%d" % (phase, i))
        toks[tok] = phase
        c = _drive_to(main, phase, tok, src)
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    settled = harness.wait_until(lambda: fd_count(wpid) == base, 15, 0.2)
    print("fds: baseline %d, after %d; rss %d -> %d kB" % (base, fd_count(wpid), rss0,
                                                           rss_kb(wpid)))
    assert settled, "worker fds %d, baseline %d" % (fd_count(wpid), base)
    time.sleep(1.5)
    delivered = {m.subject for m in pf.messages()}
    incomplete = [t for t, p in toks.items() if p in ("data", "content") and t in delivered]
    assert not incomplete, incomplete
    complete = [t for t, p in toks.items() if p == "quit"]
    assert all(t in delivered for t in complete)
    # one summary line per session
    sess = sessions_of(main, src)
    log = main.log()
    for sid in sess:
        n = len(re.findall(r"session=%s client=\S+ port=\d+ .* outcome=" % sid, log))
        assert n == 1, "session %s has %d summary lines" % (sid, n)
    assert len(sess) == len(order) + 1, (len(sess), len(order))
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_102_half_closed_sockets(pf, main):
    # QUIT then SHUT_WR: 221 still sent
    c = connect(main, source="127.0.0.202")
    ehlo(c)
    c.send(b"QUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    check(c.read_reply(), 221, "2.0.0", "Bye")
    c.close()
    # complete transaction, final dot and QUIT, then FIN: sluice's choice
    # (session_shape_client_gone): a sender that half-closes before its
    # end-of-data reply gets no 250 and nothing is delivered (EARLYCLOSE).
    tok = token("102")
    c = connect(main, source="127.0.0.202")
    ehlo(c)
    c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
    r = c.read_replies(3, timeout=20)
    assert [x[0] for x in r] == [250, 250, 354], r
    c.send(dot_stuff(message(tok)) + b".\r\nQUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    replies, closed = read_until_close(c, 20)
    c.close()
    assert closed, replies
    time.sleep(2)
    delivered = bool(by_subject(pf, tok))
    if replies:
        queued(replies[0])
        check(replies[1], 221, "2.0.0")
        assert delivered
    else:
        assert not delivered, "delivered, but the client got no 250"
        assert re.search(r"EARLYCLOSE: client closed before its end-of-data reply",
                         main.log())
    assert_alive(main)


@pytest.mark.deadline(60)
def test_hostile_103_client_gone_during_replay(fake_backend, fresh):
    """The client goes away while the replay is at DATA (the backend holds
    its 354): sluice must close the backend connection without the final
    dot, so nothing is queued."""
    fb = fake_backend
    fb.data_delay = 2.0
    try:
        sl = fresh("fb103", fb.port, backend_pool_size="1", backend_timeout="10s",
                   backend_data_timeout="10s")
        with fb.lock:
            n0 = len(fb.events)
        c = connect(sl)
        ehlo(c)
        check(c.cmd("MAIL FROM:<a@example.net>"), 250, "2.1.0")
        check(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
        assert c.cmd("DATA")[0] == 354
        c.send(dot_stuff(message(token("103"))) + b".\r\n")

        def in_data():
            with fb.lock:
                return any(k == "cmd" and d == b"DATA" for _, k, d in fb.events[n0:])
        assert harness.wait_until(in_data, 5), "replay never reached DATA"
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        time.sleep(4)
        with fb.lock:
            evs = fb.events[n0:]
        dots = [e for e in evs if e[1] == "dot"]
        print("backend events: %r" % [(n, k, d[:40]) for n, k, d in evs])
        assert not dots, "the final dot reached the backend for a client that left"
        assert_alive(sl)
    finally:
        fb.data_delay = 0


@pytest.mark.deadline(60)
def test_hostile_104_pipelined_next_transaction_during_replay(pf, main):
    tok1, tok2 = token("104a"), token("104b")
    c = connect(main)
    ehlo(c)
    c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
    assert [x[0] for x in c.read_replies(3, timeout=20)] == [250, 250, 354]
    c.send(dot_stuff(message(tok1)) + b".\r\nMAIL FROM:<b@example.net>\r\n"
           b"RCPT TO:<bob@example.com>\r\nDATA\r\n")
    r = c.read_replies(4, timeout=30)
    queued(r[0])
    check(r[1], 250, "2.1.0", "Ok")
    check(r[2], 250, "2.1.5")
    assert r[3] == (354, ["End data with <CR><LF>.<CR><LF>"]), r[3]
    c.send(dot_stuff(message(tok2, to=b"bob@example.com")) + b".\r\nQUIT\r\n")
    queued(c.read_reply(timeout=30))
    check(c.read_reply(), 221, "2.0.0")
    c.close()
    assert [m.user for m in pf.wait_messages(1, 15, lambda m: m.subject == tok1)] == ["alice"]
    assert [m.user for m in pf.wait_messages(1, 15, lambda m: m.subject == tok2)] == ["bob"]
    assert_alive(main)
