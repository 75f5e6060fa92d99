"""
evil_backend: a scriptable SMTP server that stands in for Postfix behind
sluice, for the backend fault tests (docs/hostile.md group J, goal G4).

Standard library only (threads, blocking sockets); one thread per
connection. It speaks like Postfix's smtpd with XCLIENT enabled:

  greeting  220 <host> ESMTP Postfix
  EHLO      250-PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES,
            XCLIENT NAME ADDR PORT PROTO HELO (only before XCLIENT, unless
            xclient_reuse: that is Postfix's smtpd_authorized_xclient_hosts
            re-check against the new address), CHUNKING (only with
            chunking=True)
  XCLIENT   220 (the session starts again: EHLO is needed again); a second
            XCLIENT without xclient_reuse: 550 5.7.0 insufficient
            authorization, as Postfix
  MAIL/RCPT/DATA/RSET/NOOP/QUIT, dot-unstuffing; RCPT to a local part
  starting with "nobody" gets Postfix's 550 5.1.1 "User unknown".
  BDAT      (RFC 3030, only when CHUNKING was offered) BDAT <n> [LAST]:
            exactly n octets follow, read (and discarded when there is no
            MAIL: 503, no valid RCPT: 554) before the reply; chunks add up
            until LAST; "250 2.0.0 Ok: <n> octets" to the others. The
            reply to BDAT LAST is the end-of-data verdict, as the reply to
            the final dot (mid_body and after_dot faults apply the same;
            the data fault stage is DATA's 354 only). Conn.bdats: per
            BDAT, (size, last, octets in with the command line).

Every message accepted (the moment the server decides to answer 250 to
the final dot or BDAT LAST, or to accept and then drop the connection) is
recorded with its XCLIENT identity, envelope, unstuffed body (BDAT: the
octets as received), Subject and "via" ("DATA" or "BDAT").

Pipelining rules (RFC 2920, and what Postfix 3.9's
smtpd_forbid_unauth_pipelining enforces) are checked against the client,
i.e. sluice: bytes before the greeting, anything after EHLO / HELO / DATA
/ XCLIENT / NOOP / QUIT / STARTTLS / VRFY before that command's reply,
any pipelining when PIPELINING was not offered or the session is not
ESMTP (after XCLIENT until the next EHLO), MAIL without XCLIENT when
require_xclient, a bare LF or bare CR in message data (BDAT: or a message
that does not end with CR LF), BDAT when CHUNKING was not offered or with
a bad argument, DATA after BDAT, a command line that is no SMTP verb
(what the octets beyond a BDAT's count look like). Each is appended to
.violations.

Faults (Fault(stage, kind, ...)): at stage
  greeting, ehlo (the first EHLO of a connection), xclient,
  ehlo2 (the EHLO after XCLIENT), mail, rcpt (k = its index in the
  transaction, 1-based), rset, data, mid_body, after_dot
do kind
  close         close (FIN) instead of replying
  rst           abortive close (RST)
  accept_close  do what the command asks (after_dot: the message is
                recorded as queued), then close without a reply
  reply         send the reply given as arg ("451 4.3.0 text"); a 421
                closes the connection afterwards, as Postfix does
  slow          wait arg seconds, then behave normally
  hang          never reply (the connection stays open until the peer
                closes it)
  partial       send "25" without an end of line, then hang
  mixed         multi-line reply whose code changes between lines
  badsep        reply with a bad separator ("250*Ok")
  overlong      one 2,000-byte reply line
  huge          one 1 MB reply line
  manylines     a 10,000-line reply
  garbage       a line that is not a reply at all
  barelf        the normal reply with LF line ends instead of CR LF
  extra         the normal reply followed at once by an unsolicited one
Faults match by occurrence: the n-th time that (stage, k) is reached over
all connections counts n; a fault applies when skip < n <= skip + times
(times None: for ever) and, when conns is set, only on connections number
<= conns. The fault list can be replaced at any time (set_faults).
"""

import re
import socket
import struct
import threading
import time

GROUP_END = {"EHLO", "HELO", "DATA", "XCLIENT", "NOOP", "QUIT", "STARTTLS",
             "VRFY", "EXPN", "TURN"}

# Postfix's smtpd verbs (and a few it answers 502 but that are SMTP); any
# other command line is a violation: the client is out of step (e.g. sent
# more octets than its BDAT announced) or talking nonsense.
KNOWN_VERBS = GROUP_END | {"MAIL", "RCPT", "RSET", "BDAT", "ETRN", "AUTH",
                           "XFORWARD", "HELP"}

BDAT_RX = re.compile(r"^([0-9]+)(?:[ \t]+(LAST))?$", re.I)
BDAT_MAX = 64 << 20   # larger chunks: 552 and close

STAGES = ("greeting", "ehlo", "xclient", "ehlo2", "mail", "rcpt", "rset",
          "data", "mid_body", "after_dot")

KINDS = ("close", "rst", "accept_close", "reply", "slow", "hang", "partial",
         "mixed", "badsep", "overlong", "huge", "manylines", "garbage",
         "barelf", "extra")

SUBJECT_RX = re.compile(rb"^Subject:[ \t]*(.*?)\r?$", re.M | re.I)


class Fault:
    def __init__(self, stage, kind, arg=None, k=None, skip=0, times=None,
                 conns=None):
        assert stage in STAGES, stage
        assert kind in KINDS, kind
        self.stage, self.kind, self.arg = stage, kind, arg
        self.k, self.skip, self.times, self.conns = k, skip, times, conns
        self.hits = 0

    def __repr__(self):
        return "Fault(%s%s, %s%s, skip=%d, times=%r, conns=%r)" % (
            self.stage, "" if self.k is None else "_%d" % self.k, self.kind,
            "" if self.arg is None else " %r" % (self.arg,), self.skip,
            self.times, self.conns)


class _Closed(Exception):
    pass


class Conn:
    """What the server saw on one connection."""

    def __init__(self, no, peer):
        self.no = no
        self.peer = peer
        self.opened = time.monotonic()
        self.closed = None
        self.commands = []   # command lines as received (str)
        self.replies = []    # reply bytes as sent
        self.xclient = {}    # attributes in force
        self.xclient_count = 0
        self.helo = None
        # per BDAT command: (size, last, octets of it already received
        # with the command line: all of a small chunk sent in one write)
        self.bdats = []

    @property
    def open(self):
        return self.closed is None

    @property
    def verbs(self):
        """The verb of every command line received, upper case."""
        return [l.split(" ", 1)[0].upper() for l in self.commands]


def xtext_decode(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "+" and re.match(r"[0-9A-F]{2}", s[i + 1:i + 3]):
            out.append(chr(int(s[i + 1:i + 3], 16)))
            i += 3
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


class EvilBackend:
    def __init__(self, host="127.0.0.1", port=0, hostname="pf.evil.test",
                 pipelining=True, xclient=True, xclient_reuse=False,
                 xclient_attrs="NAME ADDR PORT PROTO HELO", size=10240000,
                 starttls=False, smtputf8=False, chunking=False,
                 require_xclient=True,
                 check_delay=0.01, idle_timeout=300.0, faults=()):
        self.host = host
        self.req_port = port
        self.port = None
        self.hostname = hostname
        self.pipelining = pipelining
        self.xclient = xclient
        self.xclient_reuse = xclient_reuse
        self.xclient_attrs = xclient_attrs
        self.size = size
        self.starttls = starttls
        self.smtputf8 = smtputf8
        self.chunking = chunking
        self.require_xclient = require_xclient
        self.check_delay = check_delay
        self.idle_timeout = idle_timeout
        self.lock = threading.RLock()
        self.faults = list(faults)
        self.counts = {}
        self.conns = []
        self.messages = []
        self.violations = []
        self.sent_replies = []  # (conn no, stage, first line str)
        self.fault_log = []     # (conn no, stage, k, fault repr)
        self.cmd_log = []       # (monotonic time, conn no, command line)
        self._stop = threading.Event()
        self._sock = None
        self._threads = []
        self._socks = set()
        self._queue_id = 0

    # ------------------------------------------------------------ control

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.req_port))
        s.listen(256)
        s.settimeout(0.2)
        self._sock = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True,
                             name="evil-accept")
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        with self.lock:
            socks = list(self._socks)
        for c in socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(3)

    def set_faults(self, faults, reset_counts=True):
        with self.lock:
            self.faults = list(faults)
            if reset_counts:
                self.counts = {}

    def clear_faults(self):
        self.set_faults(())

    def drop_idle(self):
        """Close every open connection at once (FIN), as a restart would."""
        with self.lock:
            socks = list(self._socks)
        for c in socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---------------------------------------------------------- inspection

    def open_count(self):
        with self.lock:
            return sum(1 for c in self.conns if c.open)

    def tokens(self):
        with self.lock:
            return [m["subject"] for m in self.messages]

    def count(self, token):
        with self.lock:
            return sum(1 for m in self.messages if m["subject"] == token)

    def by_token(self, token):
        with self.lock:
            return [m for m in self.messages if m["subject"] == token]

    def sent_texts(self):
        """Every reply line the server sent, as str without CR LF."""
        with self.lock:
            out = set()
            for c in self.conns:
                for r in c.replies:
                    for l in r.split(b"\n"):
                        l = l.rstrip(b"\r")
                        if l:
                            out.add(l.decode("latin-1"))
            return out

    def conn_stats(self):
        """Per connection: (no, error replies sent, RSET+NOOP commands,
        MAIL commands)."""
        with self.lock:
            out = []
            for c in self.conns:
                errs = sum(1 for r in c.replies if r[:1] in (b"4", b"5"))
                junk = sum(1 for l in c.commands
                           if l.split(" ", 1)[0].upper() in ("RSET", "NOOP"))
                mails = sum(1 for l in c.commands if l.upper().startswith("MAIL"))
                out.append((c.no, errs, junk, mails))
            return out

    def idle_421s(self):
        with self.lock:
            return [x for x in self.sent_replies if x[1] == "idle"]

    def summary(self):
        with self.lock:
            return ("conns=%d open=%d messages=%d violations=%r faults_hit=%r"
                    % (len(self.conns), self.open_count(), len(self.messages),
                       self.violations[:5], self.fault_log[:8]))

    # ------------------------------------------------------------- serving

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                cs, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                conn = Conn(len(self.conns) + 1, peer)
                self.conns.append(conn)
                self._socks.add(cs)
            t = threading.Thread(target=self._serve, args=(cs, conn),
                                 daemon=True, name="evil-%d" % conn.no)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _violation(self, conn, what):
        with self.lock:
            self.violations.append("conn %d: %s" % (conn.no, what))

    def _match(self, conn, stage, k=None):
        with self.lock:
            key = (stage, k)
            n = self.counts.get(key, 0) + 1
            self.counts[key] = n
            for f in self.faults:
                if f.stage != stage or (f.k is not None and f.k != k):
                    continue
                if f.conns is not None and conn.no > f.conns:
                    continue
                if n <= f.skip or (f.times is not None and n > f.skip + f.times):
                    continue
                f.hits += 1
                self.fault_log.append((conn.no, stage, k, repr(f)))
                return f
            return None

    def _serve(self, cs, conn):
        st = _Session(self, cs, conn)
        try:
            st.run()
        except (_Closed, OSError):
            pass
        finally:
            try:
                cs.close()
            except OSError:
                pass
            with self.lock:
                conn.closed = time.monotonic()
                self._socks.discard(cs)


class _Session:
    def __init__(self, srv, cs, conn):
        self.srv = srv
        self.cs = cs
        self.conn = conn
        self.buf = b""
        self.esmtp = False
        self.helo = None
        self.xclient_done = False
        self.pipelining = False
        self.chunking = False   # CHUNKING offered in the last EHLO reply
        self.reset_txn()

    def reset_txn(self):
        self.mail_from = None
        self.rcpts = []
        self.rcpts_tried = []
        self.chunks = None      # BDAT chunks of the message so far

    # -------------------------------------------------------------- I/O

    def send(self, data, stage):
        if isinstance(data, str):
            data = data.encode("latin-1")
        with self.srv.lock:
            self.conn.replies.append(data)
            first = data.split(b"\n", 1)[0].rstrip(b"\r")
            self.srv.sent_replies.append((self.conn.no, stage,
                                          first.decode("latin-1")))
        self.cs.sendall(data)

    def pending_input(self, wait):
        """Whether the peer has sent bytes we have not consumed, waiting up
        to wait seconds for them."""
        if self.buf:
            return True
        try:
            self.cs.settimeout(wait)
            d = self.cs.recv(65536, socket.MSG_PEEK)
            if not d:
                return False
            return True
        except (socket.timeout, BlockingIOError):
            return False
        finally:
            self.cs.settimeout(None)

    def _recv_more(self, deadline):
        """One read into self.buf, waiting at most until deadline (past it,
        Postfix's idle 421 and close). Returns whether bytes came in."""
        left = deadline - time.monotonic()
        if left <= 0 or self.srv._stop.is_set():
            try:
                self.send("421 4.4.2 %s Error: timeout exceeded\r\n"
                          % self.srv.hostname, "idle")
            except OSError:
                pass
            raise _Closed()
        self.cs.settimeout(min(left, 0.5))
        try:
            d = self.cs.recv(65536)
        except socket.timeout:
            return False
        if not d:
            raise _Closed()
        self.buf += d
        return True

    def read_line(self, limit=1 << 20):
        deadline = time.monotonic() + self.srv.idle_timeout
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise _Closed()
            self._recv_more(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def read_octets(self, n, first=None):
        """Exactly n octets (a BDAT chunk), the idle timeout applying to
        each wait for more. first: called once, as soon as some of them
        are in (at once when n is 0)."""
        deadline = time.monotonic() + self.srv.idle_timeout
        while len(self.buf) < n:
            if first is not None and self.buf:
                first()
                first = None
            if self._recv_more(deadline):
                deadline = time.monotonic() + self.srv.idle_timeout
        if first is not None:
            first()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def hang(self):
        """Read and discard until the peer closes (or the server stops)."""
        self.cs.settimeout(0.2)
        while not self.srv._stop.is_set():
            try:
                d = self.cs.recv(65536)
            except socket.timeout:
                continue
            if not d:
                break
        raise _Closed()

    def close(self, rst=False):
        if rst:
            self.cs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                               struct.pack("ii", 1, 0))
        raise _Closed()

    # ------------------------------------------------------------- faults

    def reply(self, stage, normal, k=None, group_end=False):
        """Send the normal reply for stage, or what a matching fault says.
        normal: the reply text (str, CR LF lines). Returns False when the
        connection is to be closed after the reply."""
        if group_end and self.pending_input(self.srv.check_delay):
            self.srv._violation(self.conn, "command pipelined after a "
                                "group-ending command at stage %s: %r"
                                % (stage, self.buf[:80] or self._peek()))
        f = self.srv._match(self.conn, stage, k)
        if f is None:
            self.send(normal, stage)
            return True
        return self.apply(f, stage, normal)

    def _peek(self):
        try:
            self.cs.settimeout(0.01)
            return self.cs.recv(80, socket.MSG_PEEK)
        except (socket.timeout, OSError):
            return b""
        finally:
            self.cs.settimeout(None)

    def apply(self, f, stage, normal):
        kind, code = f.kind, normal[:3]
        if kind in ("close", "accept_close"):
            self.close()
        if kind == "rst":
            self.close(rst=True)
        if kind == "hang":
            self.hang()
        if kind == "slow":
            time.sleep(float(f.arg))
            self.send(normal, stage)
            return True
        if kind == "reply":
            text = f.arg if f.arg.endswith("\r\n") else f.arg + "\r\n"
            self.send(text, stage)
            if text.startswith("421"):
                self.close()
            return False if text[0] in "45" else True
        if kind == "partial":
            self.send(code[:2], stage)
            self.hang()
        if kind == "mixed":
            other = "251" if code != "251" else "252"
            self.send("%s-first line\r\n%s second line\r\n" % (code, other), stage)
            return True
        if kind == "badsep":
            self.send("%s*Ok\r\n" % code, stage)
            return True
        if kind == "overlong":
            self.send("%s %s\r\n" % (code, "x" * 2000), stage)
            return True
        if kind == "huge":
            self.send("%s %s\r\n" % (code, "y" * (1 << 20)), stage)
            return True
        if kind == "manylines":
            self.send("".join("%s-line %d\r\n" % (code, i) for i in range(10000))
                      + "%s last\r\n" % code, stage)
            return True
        if kind == "garbage":
            self.send("hello there, this is not SMTP\r\n", stage)
            return True
        if kind == "barelf":
            self.send(normal.replace("\r\n", "\n"), stage)
            return True
        if kind == "extra":
            self.send(normal + "250 2.0.0 unsolicited extra reply\r\n", stage)
            return True
        raise AssertionError(kind)

    # ------------------------------------------------------------ protocol

    def cap(self, name):
        v = getattr(self.srv, name)
        return v(self.conn.no) if callable(v) else v

    def ehlo_reply(self, name):
        self.pipelining = bool(self.cap("pipelining"))
        lines = [self.srv.hostname]
        if self.pipelining:
            lines.append("PIPELINING")
        lines.append("SIZE %d" % self.cap("size"))
        lines.append("VRFY")
        lines.append("ETRN")
        if self.cap("starttls"):
            lines.append("STARTTLS")
        lines.append("ENHANCEDSTATUSCODES")
        lines.append("8BITMIME")
        lines.append("DSN")
        if self.cap("smtputf8"):
            lines.append("SMTPUTF8")
        if self.srv.xclient and (not self.xclient_done or self.srv.xclient_reuse):
            lines.append("XCLIENT " + self.srv.xclient_attrs)
        self.chunking = bool(self.cap("chunking"))
        if self.chunking:
            lines.append("CHUNKING")
        return "".join("250%s%s\r\n" % ("-" if i < len(lines) - 1 else " ", l)
                       for i, l in enumerate(lines))

    def run(self):
        srv, conn = self.srv, self.conn
        # Anything before the greeting is a violation (Postfix: "spoke
        # before the greeting" / improper pipelining).
        f = srv._match(conn, "greeting")
        if f is not None and f.kind == "slow":
            time.sleep(float(f.arg))
            f = None
        if self.pending_input(srv.check_delay):
            srv._violation(conn, "spoke before the greeting: %r" % self._peek())
        greeting = "220 %s ESMTP Postfix\r\n" % srv.hostname
        if f is None:
            self.send(greeting, "greeting")
        elif not self.apply(f, "greeting", greeting):
            pass  # a 4xx/5xx greeting: Postfix then waits for QUIT
        while True:
            raw = self.read_line()
            line = raw.decode("latin-1").rstrip("\r\n")
            if not raw.endswith(b"\r\n"):
                srv._violation(conn, "command line without CR LF: %r" % raw[:80])
            with srv.lock:
                conn.commands.append(line)
                srv.cmd_log.append((time.monotonic(), conn.no, line))
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb) + 1:] if " " in line else ""
            if verb not in KNOWN_VERBS:
                # also what the octets a BDAT sender sent beyond its count
                # look like
                srv._violation(conn, "unknown command (dialogue out of "
                               "step?): %r" % line[:80])
            # Pipelining without permission: more input already here when
            # a non-group-ending command is read (BDAT: checked after its
            # octets).
            if verb not in GROUP_END and verb != "BDAT" and self.buf and \
                    (not self.pipelining or not self.esmtp):
                srv._violation(conn, "pipelining without PIPELINING/ESMTP "
                               "after %r: %r" % (line[:40], self.buf[:60]))
            if not self.command(verb, arg, line):
                return

    def command(self, verb, arg, line):
        srv, conn = self.srv, self.conn
        if verb in ("EHLO", "HELO"):
            stage = "ehlo2" if self.xclient_done else "ehlo"
            self.helo = arg.strip()
            self.esmtp = verb == "EHLO"
            conn.helo = self.helo
            self.reset_txn()
            self.chunking = False  # ehlo_reply sets it again
            normal = (self.ehlo_reply(arg) if verb == "EHLO"
                      else "250 %s\r\n" % srv.hostname)
            return self.reply(stage, normal, group_end=True) or True
        if verb == "XCLIENT":
            if not srv.xclient or (self.xclient_done and not srv.xclient_reuse):
                return self.reply("xclient", "550 5.7.0 Error: insufficient "
                                  "authorization\r\n", group_end=True) or True
            attrs = {}
            for tok in arg.split():
                if "=" in tok:
                    n, v = tok.split("=", 1)
                    attrs[n.upper()] = xtext_decode(v)
            ok = self.reply("xclient", "220 %s ESMTP Postfix\r\n" % srv.hostname,
                            group_end=True)
            if ok:
                conn.xclient.update(attrs)
                conn.xclient_count += 1
                self.xclient_done = "ADDR" in conn.xclient
                self.esmtp = False
                self.chunking = False
                self.helo = None
                self.reset_txn()
            return True
        if verb == "MAIL":
            if self.helo is None:
                self.send("503 5.5.1 Error: send HELO/EHLO first\r\n", "mail")
                return True
            if self.mail_from is not None:
                self.send("503 5.5.1 Error: nested MAIL command\r\n", "mail")
                return True
            if srv.require_xclient and not self.xclient_done:
                srv._violation(conn, "MAIL without XCLIENT ADDR: %r" % line)
            m = re.match(r"(?i)FROM:\s*<([^>]*)>", arg)
            ok = self.reply("mail", "250 2.1.0 Ok\r\n")
            if ok:
                self.mail_from = m.group(1) if m else arg
            return True
        if verb == "RCPT":
            if self.mail_from is None:
                self.send("503 5.5.1 Error: need MAIL command\r\n", "rcpt")
                return True
            m = re.match(r"(?i)TO:\s*<([^>]*)>", arg)
            addr = m.group(1) if m else arg
            self.rcpts_tried.append(addr)
            k = len(self.rcpts_tried)
            if addr.lower().startswith("nobody"):
                normal = ("550 5.1.1 <%s>: Recipient address rejected: User "
                          "unknown in virtual mailbox table\r\n" % addr)
            else:
                normal = "250 2.1.5 Ok\r\n"
            ok = self.reply("rcpt", normal, k=k)
            if ok and normal.startswith("250"):
                self.rcpts.append(addr)
            return True
        if verb == "RSET":
            self.reply("rset", "250 2.0.0 Ok\r\n")
            self.reset_txn()
            return True
        if verb == "NOOP":
            if self.pending_input(self.srv.check_delay):
                self.srv._violation(self.conn, "command pipelined after NOOP")
            self.send("250 2.0.0 Ok\r\n", "noop")
            return True
        if verb == "QUIT":
            self.send("221 2.0.0 Bye\r\n", "quit")
            return False
        if verb == "DATA":
            return self.data()
        if verb == "BDAT":
            return self.bdat(arg, line)
        if verb == "STARTTLS":
            self.send("502 5.5.1 Error: command not implemented\r\n", "starttls")
            return True
        self.send("502 5.5.2 Error: command not recognized\r\n", "other")
        return True

    def data(self):
        srv, conn = self.srv, self.conn
        if self.chunks is not None:
            srv._violation(conn, "DATA after BDAT in one transaction")
            self.send("503 5.5.1 Error: DATA after BDAT\r\n", "data")
            return True
        if self.mail_from is None:
            self.reply("data", "503 5.5.1 Error: need RCPT command\r\n",
                       group_end=True)
            return True
        if not self.rcpts:
            self.reply("data", "554 5.5.1 Error: no valid recipients\r\n",
                       group_end=True)
            return True
        if not self.reply("data", "354 End data with <CR><LF>.<CR><LF>\r\n",
                          group_end=True):
            self.reset_txn()
            return True
        body = []
        first = True
        while True:
            raw = self.read_line()
            if first:
                first = False
                self.mid_body()
            self.check_data_line(raw)
            if raw == b".\r\n":
                break
            if raw.startswith(b"."):
                raw = raw[1:]
            body.append(raw)
        return self.end_of_message(b"".join(body), "DATA")

    def bdat(self, arg, line):
        """BDAT <size> [LAST] (RFC 3030): exactly size octets follow the
        command line, no dot-stuffing, no final dot. The octets are read
        (and discarded when the transaction is wrong, as Postfix) before
        the reply, so the dialogue stays in step."""
        srv, conn = self.srv, self.conn
        if not self.chunking:
            srv._violation(conn, "BDAT without CHUNKING offered: %r" % line[:80])
            self.send("502 5.5.2 Error: command not recognized\r\n", "other")
            return True
        m = BDAT_RX.match(arg.strip())
        if m is None:
            # The octet count is unknown: what follows is out of step.
            srv._violation(conn, "BDAT syntax: %r" % line[:80])
            self.send("501 5.5.4 Syntax: BDAT count [LAST]\r\n", "bdat")
            return True
        size, last = int(m.group(1)), m.group(2) is not None
        with srv.lock:
            conn.bdats.append((size, last, min(len(self.buf), size)))
        if size > BDAT_MAX:
            srv._violation(conn, "BDAT of %d octets" % size)
            self.send("552 5.3.4 Error: message file too big\r\n", "bdat")
            self.close()
        in_txn = self.mail_from is not None and bool(self.rcpts)
        # The mid_body fault point: the message's first octets are in.
        first = self.mid_body if in_txn and self.chunks is None else None
        octets = self.read_octets(size, first)
        if self.buf and (not self.pipelining or not self.esmtp):
            srv._violation(conn, "pipelining without PIPELINING/ESMTP after "
                           "%r and its octets: %r" % (line[:40], self.buf[:60]))
        if not in_txn:
            self.chunks = None
            if self.mail_from is None:
                self.send("503 5.5.1 Error: need RCPT command\r\n", "bdat")
            else:
                self.send("554 5.5.1 Error: no valid recipients\r\n", "bdat")
            return True
        if self.chunks is None:
            self.chunks = []
        self.chunks.append(octets)
        if not last:
            self.send("250 2.0.0 Ok: %d octets\r\n" % size, "bdat")
            return True
        data = b"".join(self.chunks)
        self.check_message_octets(data)
        return self.end_of_message(data, "BDAT")

    def mid_body(self):
        """The mid_body fault point (DATA: after the first line of the
        message; BDAT: as soon as the first octets are in)."""
        mid = self.srv._match(self.conn, "mid_body")
        if mid is None:
            return
        if mid.kind in ("close", "accept_close"):
            self.close()
        if mid.kind == "rst":
            self.close(rst=True)
        if mid.kind == "hang":
            self.hang()
        if mid.kind == "slow":
            time.sleep(float(mid.arg))
        if mid.kind == "reply":
            self.send(mid.arg + "\r\n", "mid_body")
            if mid.arg.startswith("421"):
                self.close()
        if mid.kind == "extra":
            self.send("250 2.0.0 unsolicited mid-body reply\r\n", "mid_body")

    def check_data_line(self, raw):
        """raw: one line of message data as received, up to its LF."""
        if not raw.endswith(b"\r\n"):
            self.srv._violation(self.conn, "bare LF in message data: %r"
                                % raw[-60:])
        if b"\r" in raw[:-2]:
            self.srv._violation(self.conn, "bare CR in message data: %r"
                                % raw[-60:])

    def check_message_octets(self, data):
        """DATA's line-end checks over a whole message (BDAT)."""
        lines = data.split(b"\n")
        for l in lines[:-1]:
            self.check_data_line(l + b"\n")
        if lines[-1]:
            self.srv._violation(self.conn, "message data does not end with "
                                "CR LF: %r" % lines[-1][-60:])

    def end_of_message(self, data, via):
        """The whole message is in (after the final dot, or with BDAT
        LAST): record it as Postfix would queue it, then the verdict or
        the after_dot fault. via: "DATA" or "BDAT"."""
        srv, conn = self.srv, self.conn
        m = SUBJECT_RX.search(data.split(b"\r\n\r\n", 1)[0])
        subject = m.group(1).decode("latin-1").strip() if m else ""
        with srv.lock:
            srv._queue_id += 1
            qid = "EV%06X" % srv._queue_id
        record = {
            "conn": conn.no, "xclient": dict(conn.xclient), "helo": self.helo,
            "mail_from": self.mail_from, "rcpts": list(self.rcpts),
            "data": data, "subject": subject, "queue_id": qid,
            "time": time.monotonic(), "via": via,
        }
        normal = "250 2.0.0 Ok: queued as %s\r\n" % qid
        f = srv._match(conn, "after_dot")
        accept = f is None or f.kind in ("accept_close", "slow", "extra",
                                         "hang", "partial", "mixed", "badsep",
                                         "overlong", "huge", "manylines",
                                         "garbage", "barelf")
        if f is not None and f.kind == "reply" and f.arg.startswith("2"):
            accept = True
        if accept:
            # Postfix has the queue file on disk before it answers.
            with srv.lock:
                srv.messages.append(record)
        self.reset_txn()
        if f is None:
            self.send(normal, "after_dot")
            return True
        return self.apply(f, "after_dot", normal) or True


# ====================================================================
# Client side: transactions through sluice and the invariants of G4.
# (Used by test_hostile_j.py and test_faults.py.)
# ====================================================================

import os  # noqa: E402
import uuid  # noqa: E402

ENH_RX = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?: |$)")


def token(tag):
    return "evil-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message_bytes(tok, body=None, to="alice@example.com"):
    body = body if body is not None else (
        b"Line one of the test body.\r\n.a line with a leading dot\r\n"
        b"..two dots\r\nlast line\r\n")
    return (b"From: Evil Test <a@example.net>\r\n"
            b"To: <" + to.encode() + b">\r\n"
            b"Subject: " + tok.encode() + b"\r\n"
            b"Message-ID: <" + tok.encode() + b"@example.net>\r\n"
            b"\r\n" + body)


def dot_stuff(msg):
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    out = [(b"." + l) if l.startswith(b".") else l
           for l in msg.split(b"\r\n")[:-1]]
    return b"\r\n".join(out) + b"\r\n"


class Reply:
    def __init__(self, step, code, lines, secs):
        self.step, self.code, self.lines, self.secs = step, code, lines, secs
        m = ENH_RX.match(lines[0]) if lines else None
        self.enhanced = m.group(1) if m else ""

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def key(self):
        """"451 4.4.2" style."""
        return ("%d %s" % (self.code, self.enhanced)).strip()

    def __repr__(self):
        return "<%s %d %s (%.2fs)>" % (self.step, self.code, " | ".join(self.lines)[:160],
                                      self.secs)


class TxnResult:
    def __init__(self, tok, msg):
        self.tok = tok
        self.msg = msg            # the message bytes (unstuffed)
        self.replies = []
        self.error = None         # connection lost / timeout (str)
        self.started = time.monotonic()
        self.ended = None

    @property
    def final(self):
        """The reply that decided the transaction (the last one read
        before QUIT)."""
        rs = [r for r in self.replies if r.step != "quit"]
        return rs[-1] if rs else None

    @property
    def accepted(self):
        f = self.final
        return f is not None and f.step == "dot" and f.code == 250

    def reply(self, step):
        for r in self.replies:
            if r.step == step:
                return r
        return None

    @property
    def elapsed(self):
        return (self.ended or time.monotonic()) - self.started

    def __repr__(self):
        return "<txn %s %r error=%r %.2fs>" % (self.tok, self.replies, self.error,
                                               self.elapsed)


def run_txn(sl, tok=None, rcpts=("alice@example.com",), source="127.0.0.23",
            helo="client23.example", pipelined=False, body=None, timeout=15,
            tls=False, quit=True):
    """One client transaction through sluice: greeting, EHLO, [STARTTLS,
    EHLO,] MAIL, RCPT..., DATA, body, ".", QUIT. Stops at the first
    failure. Every reply and its wait is recorded."""
    import harness
    tok = tok or token("t")
    msg = message_bytes(tok, body, rcpts[0] if rcpts else "alice@example.com")
    res = TxnResult(tok, msg)
    c = None

    def rd(step):
        t0 = time.monotonic()
        code, lines = c.read_reply(timeout)
        r = Reply(step, code, lines, time.monotonic() - t0)
        res.replies.append(r)
        return r

    try:
        c = harness.SmtpRaw(sl.host, sl.port, source=source, timeout=timeout)
        if rd("greeting").code != 220:
            return res
        c.send("EHLO %s\r\n" % helo)
        if rd("ehlo").code != 250:
            return res
        if tls:
            c.send("STARTTLS\r\n")
            if rd("starttls").code != 220:
                return res
            c.starttls(harness.unverified_tls_context())
            c.send("EHLO %s\r\n" % helo)
            if rd("ehlo").code != 250:
                return res
        if pipelined:
            c.send("MAIL FROM:<a@example.net>\r\n"
                   + "".join("RCPT TO:<%s>\r\n" % r for r in rcpts) + "DATA\r\n")
            if rd("mail").code != 250:
                for r in rcpts:
                    rd("rcpt")
                rd("data")
                return res
            ok = [rd("rcpt").code // 100 == 2 for r in rcpts]
            d = rd("data")
            if d.code != 354:
                return res
        else:
            c.send("MAIL FROM:<a@example.net>\r\n")
            if rd("mail").code != 250:
                return res
            ok = []
            for r in rcpts:
                c.send("RCPT TO:<%s>\r\n" % r)
                ok.append(rd("rcpt").code // 100 == 2)
            if not any(ok):
                return res
            c.send("DATA\r\n")
            if rd("data").code != 354:
                return res
        c.send(dot_stuff(msg) + b".\r\n")
        rd("dot")
        if quit:
            try:
                c.send("QUIT\r\n")
                rd("quit")
            except (OSError, harness.SmtpError):
                pass
    except (OSError, harness.SmtpError) as e:
        res.error = "%s: %s" % (type(e).__name__, e)
    finally:
        res.ended = time.monotonic()
        if c is not None:
            c.close()
    return res


def sanitizer_findings(log):
    """ASan/UBSan reports and worker crashes in a sluice log."""
    out = []
    for l in log.splitlines():
        if ("ERROR: AddressSanitizer" in l or "runtime error:" in l
                or "ERROR: LeakSanitizer" in l or "killed by signal" in l
                or "SUMMARY: " in l):
            out.append(l)
    return out


def check_invariants(evil, sl, results, reply_bound, allow_dup=False,
                     expect_violations=False, killed_ok=False):
    """G4's assertions over finished transactions:
      - a client got 250 at the end of data only if the backend recorded
        the message (loss = 0), once (duplicates only with allow_dup);
      - what the backend recorded is exactly what the client sent (nothing
        incomplete or altered is delivered);
      - a message the client saw refused with 5xx was not recorded;
      - every 5xx a client got is one the backend sent (no invented 5xx);
      - no reply took longer than reply_bound seconds (deadline);
      - the backend saw no RFC 2920 / XCLIENT violation;
      - sluice is alive, no worker crashed, no sanitizer report."""
    problems = []
    sent = evil.sent_texts()
    for res in results:
        n = evil.count(res.tok)
        if res.accepted and n == 0:
            problems.append("LOSS: client got 250 but the backend has no %s: %r"
                            % (res.tok, res))
        if n > 1 and not allow_dup:
            problems.append("DUPLICATE: %s recorded %d times: %r" % (res.tok, n, res))
        for m in evil.by_token(res.tok):
            if m["data"] != res.msg:
                problems.append("ALTERED/INCOMPLETE message %s at the backend: "
                                "%r != %r" % (res.tok, m["data"][:200], res.msg[:200]))
        f = res.final
        if f is not None and f.step == "dot" and f.code >= 500 and n:
            problems.append("client got %r but the backend queued %s" % (f, res.tok))
        for r in res.replies:
            if r.code >= 500 and r.step not in ("greeting",):
                first = "%d %s" % (r.code, r.lines[0])
                if first not in sent:
                    problems.append("INVENTED 5xx: client got %r which the backend "
                                    "never sent" % r)
            if r.secs > reply_bound:
                problems.append("DEADLINE: %s reply took %.2f s > %.2f s: %r"
                                % (r.step, r.secs, reply_bound, res))
        if res.error and "timed out" in res.error:
            problems.append("DEADLINE: client timed out: %r" % res)
    if evil.violations and not expect_violations:
        problems.append("backend saw protocol violations: %r" % evil.violations[:5])
    if not killed_ok:
        if not sl.alive():
            problems.append("sluice exited")
        problems += ["sluice log: " + l for l in sanitizer_findings(sl.log())]
    return problems


def deliver_after_recovery(evil, sl, window=6.0, tag="recover", **kw):
    """A normal delivery works again within window seconds (the pool
    recovers). Returns (TxnResult of the success or last try, tries)."""
    deadline = time.monotonic() + window
    tries = 0
    res = None
    while True:
        tries += 1
        res = run_txn(sl, token(tag), timeout=window, **kw)
        if res.accepted and evil.count(res.tok) == 1:
            return res, tries
        if time.monotonic() >= deadline:
            return res, tries
        time.sleep(0.1)


def worker_pids(sl):
    """Live worker pids from the sluice log ("worker N: ready pid=P")."""
    pids = []
    for m in re.finditer(r"worker (\d+): ready pid=(\d+)", sl.log()):
        pid = int(m.group(2))
        if os.path.exists("/proc/%d" % pid):
            pids.append(pid)
    return pids


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


# ---------------------------------------------------------------- catalogue

def _load_replies():
    """sluice's own replies from src/replies.h: {ID: (code, enhanced, text)}."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "src", "replies.h")
    out = {}
    with open(path) as f:
        src = f.read()
    for m in re.finditer(r'X\((\w+),\s*(\d+),\s*"([^"]*)",\s*"((?:[^"\\]|\\.)*)"\)', src):
        out[m.group(1)] = (int(m.group(2)), m.group(3),
                           m.group(4).replace('\\"', '"'))
    return out


SLUICE_REPLIES = _load_replies()


def is_sluice_reply(r, rid, hostname="sluice.test"):
    """Whether client reply r is sluice's catalogue reply rid, exactly."""
    code, enh, text = SLUICE_REPLIES[rid]
    text = text.replace("%H", hostname)
    want = ("%s %s" % (enh, text)) if enh else text
    return r.code == code and r.enhanced == enh and r.lines[0] == want


def which_sluice_reply(r, hostname="sluice.test"):
    for rid in SLUICE_REPLIES:
        if is_sluice_reply(r, rid, hostname):
            return rid
    return None


try:
    import pytest

    @pytest.fixture
    def evil():
        """Factory: evil(**EvilBackend kwargs) -> started EvilBackend;
        stopped at teardown (request it before `sluice`)."""
        started = []

        def make(**kw):
            e = EvilBackend(**kw).start()
            started.append(e)
            return e

        yield make
        for e in started:
            e.stop()
except ImportError:  # used outside pytest
    pass
