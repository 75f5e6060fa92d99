#!/usr/bin/python3
"""botsim: does shaping work against bots? A reproducible simulation on
loopback (see bench/botsim.md for the model and BENCHMARKS.md for results).

    bench/botsim.py [--profile all|fast,t21,t100,idle,patient,mix,mtaspam]
                    [--scale K] [--setups direct,sluice,postscreen,trickle]
                    [--lists single|production] [--pool-legit N]
                    [--shape-time 120[,60,...]] [--bots 200] [--legit 40]
                    [--seed 1] [--sluice PATH] [--json FILE] [--keep]

One private Postfix (tests/scenario/harness.py) with two listeners: plain
smtpd (the backend, also sluice's backend) and a postscreen front on another
port; one private dnsmasq on 127.0.53.53:53 that serves PTR/A records of
every simulated client and the blocklist zone bl.test; sluice started fresh
(empty state_dir) for each profile. For each bot-patience profile the same
population of sessions (same seed) is run against each set-up in turn:

  direct      straight to the backend smtpd
  sluice      sluice (dnsbl_sites = bl.test, default weights) -> backend
  postscreen  postscreen (dnsbl enforce, greet enforce, deep tests) -> smtpd
  trickle     sluice configured as "a relay that only trickles replies to
              listed clients": bl.test*3, every other weight 0, no greet
              wait, shape_time = 1d, no end-of-data hold (sluice's
              early-close and pipelining checks cannot be switched off, so
              they still act)

--lists production gives every listed address a Spamhaus ZEN return code
in bl.test (MTA-grade senders half SBL 127.0.0.2, half PBL 127.0.0.10;
bots 60 % XBL 127.0.0.4, 40 % PBL; policy-listed legitimate senders PBL)
and runs sluice with docs/classification.md's production weights
(SBL 8, XBL 4, PBL 2, reject_threshold 8) and postscreen with the same
weights and threshold 3. The profile "mtaspam" is MTA-grade spam (patient
real servers) of which --content-share carries a marker that the backend's
body_checks REJECTs (5.7.1) in every set-up alike. --pool-legit N adds N
legitimate senders (FCrDNS, unlisted) in the bots' first /24, a provider
pool shared with bots; sluice's log tells how many of them were shaped.

Time is compressed by K for every set-up alike: every duration (bot
deadlines, RFC timeouts, retry interval, greet_wait, shape_time,
shape_final_hold, smtpd timeouts, arrival window) is divided by K and shape_rate multiplied by K.
Results are printed in real (unscaled) seconds. Root, Debian 12,
/usr/bin/python3; addresses 127.0.0.0/8 only. Every process started here is
stopped at the end, every wait and loop is bounded.
"""
import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "scenario"))
import harness  # noqa: E402

# RFC 5321 4.5.3.2 client timeouts (seconds, unscaled).
RFC = {"greeting": 300, "ehlo": 300, "mail": 300, "rcpt": 300, "data": 120,
       "block": 180, "dot": 600, "quit": 300}
RETRY_DELAY = 300      # a real MTA's first retry (Postfix: ~5 min), unscaled
SLUICE_GREET_WAIT = 6  # sluice and postscreen defaults, unscaled
SLUICE_FINAL_HOLD = 120  # sluice default shape_final_hold, unscaled
SLUICE_SHAPE_RATE = 5
SMTPD_TIMEOUT = 300
DNS_ADDRS = ("127.0.53.53", "127.0.53.54", "127.0.53.55")
RCPTS = ["%s@%s" % (u, harness.DOMAIN) for u in harness.USERS]

# Patience kinds; a profile is a mixture of them.
PROFILES = {
    "fast": {"fast": 1.0},        # deadline uniform 3-10 s from connect
    "t21": {"t21": 1.0},          # fixed 21 s deadline
    "t100": {"t100": 1.0},        # fixed 100 s deadline
    "idle": {"idle": 1.0},        # gives up only after IDLE s of silence
    "patient": {"patient": 1.0},  # real server: RFC timeouts, retries 4xx
    "mix": {"fast": 0.35, "t21": 0.20, "t100": 0.15, "idle": 0.15,
            "patient": 0.15},
    "mtaspam": {"patient": 1.0},  # real servers, part of it refused for content
}
PROFILE_ORDER = ("fast", "t21", "t100", "idle", "patient", "mix", "mtaspam")
CONTENT_MARKER = "BOTSIM-CONTENT-REJECT"  # the backend's body_checks REJECTs it
# Spamhaus ZEN return codes (docs/classification.md) and the production
# weights for them, on the private list bl.test.
ZEN_SBL, ZEN_XBL, ZEN_PBL = "127.0.0.2", "127.0.0.4", "127.0.0.10"
PRODUCTION_SITES = ("bl.test=127.0.0.[2;3;9]*8 bl.test=127.0.0.[4..7]*4 "
                    "bl.test=127.0.0.[10;11]*2")
PRODUCTION_REJECT = 8


class GiveUp(Exception):
    """The client's own timer ran out (reason: deadline, idle, timeout)."""


class Closed(Exception):
    """The server closed (or reset) the connection."""


def log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------ address plan

class Host:
    def __init__(self, addr, name=None, helo=None, listed=False, kind="",
                 code=ZEN_SBL):
        self.addr, self.name, self.helo = addr, name, helo
        self.listed, self.kind = listed, kind
        self.code = code  # bl.test's answer when listed


def address_plan(a):
    """Every simulated client address with its DNS and HELO, fixed for the
    whole run (seeded)."""
    rng = random.Random("plan-%d" % a.seed)
    bots = []
    for i in range(a.bot_addrs):
        net = (5, 6)[i % 2]
        host = 1 + i // 2
        if host > 199:
            raise SystemExit("--bot-addrs too large (at most 398)")
        addr = "127.0.%d.%d" % (net, host)
        generic = rng.random() < a.bot_ptr_generic
        name = ("dsl-127-0-%d-%d.dyn.pool.isp.example" % (net, host)
                if generic else None)
        # A bad HELO (not a FQDN, a foreign literal, localhost) or a
        # plausible one (its PTR name, or some FQDN).
        if rng.random() < a.bot_helo_bad:
            helo = rng.choice(["WIN-%06X" % rng.randrange(1 << 24), "localhost",
                               "[10.%d.%d.%d]" % (rng.randrange(256),
                                                  rng.randrange(256),
                                                  rng.randrange(1, 255)),
                               "user-pc"])
        else:
            helo = name or "mail.%s.com" % "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
        code = ZEN_XBL if rng.random() < 0.6 else ZEN_PBL
        bots.append(Host(addr, name, helo, rng.random() < a.bot_listed, "bot",
                         code if a.lists == "production" else ZEN_SBL))
    patient = []
    for i in range(a.patient_addrs):
        addr = "127.0.9.%d" % (1 + i)
        name = "smtp%d.bulk-mailer%d.example" % (i + 1, i + 1)
        code = ZEN_SBL if a.lists != "production" or i % 2 == 0 else ZEN_PBL
        patient.append(Host(addr, name, name, True, "patient", code))
    legit = []
    n_listed = int(round(a.legit * a.legit_listed))
    for i in range(a.legit - n_listed):
        addr = "127.0.7.%d" % (1 + i)
        name = "mx.legit%d.example" % (i + 1)
        legit.append(Host(addr, name, name, False, "legit"))
    for i in range(n_listed):
        # Half in a bot /24 (a policy-listed office next to infected
        # hosts), half in a listed but otherwise clean /24.
        addr = ("127.0.6.%d" % (201 + i // 2)) if i % 2 == 0 else \
            ("127.0.8.%d" % (1 + i // 2))
        name = "mail.office%d.example" % (i + 1)
        legit.append(Host(addr, name, name, True, "legit-listed",
                          ZEN_PBL if a.lists == "production" else ZEN_SBL))
    for i in range(a.pool_legit):
        # A provider's outbound pool: the bots' first /24, above them.
        addr = "127.0.5.%d" % (230 + i)
        if 230 + i > 254:
            raise SystemExit("--pool-legit too large (at most 25)")
        name = "out%d.provider.example" % (i + 1)
        legit.append(Host(addr, name, name, False, "legit-pool"))
    return bots, patient, legit


# ------------------------------------------------------------------ DNS

class Dns:
    """Private authoritative dnsmasq on <addr>:53 (port 53 because Postfix's
    dnsblog uses the libc resolver, which has no port setting)."""

    def __init__(self, d, hosts):
        self.dir = harness.make_world_dir(d)
        self.hosts = hosts
        self.addr = None
        self.proc = None

    def write(self, addr):
        hosts = ["%s %s" % (h.addr, h.name) for h in self.hosts if h.name]
        with open(os.path.join(self.dir, "hosts"), "w") as f:
            f.write("\n".join(hosts) + "\n")
        lines = ["port=53", "listen-address=%s" % addr, "bind-interfaces",
                 "no-resolv", "no-poll", "no-hosts", "no-negcache",
                 "addn-hosts=%s/hosts" % self.dir, "log-queries",
                 "log-facility=%s/dnsmasq.log" % self.dir, "user=nobody",
                 "local=/example/", "local=/test/", "local=/127.in-addr.arpa/",
                 "local=/bl.test/",
                 "host-record=%s,127.0.0.1" % harness.SLUICE_HOSTNAME,
                 "host-record=2.0.0.127.bl.test,127.0.0.2"]
        for h in self.hosts:
            if h.listed:
                lines.append("host-record=%s.bl.test,%s"
                             % (".".join(reversed(h.addr.split("."))), h.code))
        with open(os.path.join(self.dir, "dnsmasq.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        for n in ("hosts", "dnsmasq.conf"):
            os.chmod(os.path.join(self.dir, n), 0o644)
        open(os.path.join(self.dir, "dnsmasq.log"), "a").close()
        os.chmod(os.path.join(self.dir, "dnsmasq.log"), 0o666)

    def start(self):
        for addr in DNS_ADDRS:
            if harness.is_listening(53, addr):
                continue  # another botsim run: its answers would look like ours
            self.write(addr)
            self.proc = subprocess.Popen(
                ["/usr/sbin/dnsmasq", "--conf-file=%s/dnsmasq.conf" % self.dir,
                 "--keep-in-foreground"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(self.dir, "stderr"), "ab"),
                start_new_session=True)

            def ok():
                if self.proc.poll() is not None:
                    return "dead"
                try:
                    return harness.dns_query(addr, 53, "2.0.0.127.bl.test",
                                             timeout=0.5)[0] == 0
                except OSError:
                    return False
            r = harness.wait_until(ok, 10, 0.1)
            time.sleep(0.3)
            if r is True and self.proc.poll() is None:
                self.addr = addr
                return self
            self.stop()
        raise RuntimeError("dnsmasq could not serve on any of %s port 53: %s"
                           % (DNS_ADDRS, open(os.path.join(self.dir, "stderr")).read()))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# ------------------------------------------------------------- sessions

class Session:
    def __init__(self, idx, role, host, patience=None, deadline=None,
                 quirk="plain", start=0.0, pipelining=False, marked=False):
        self.idx, self.role, self.host = idx, role, host
        self.patience = patience  # fast, t21, t100, idle, patient (bots)
        self.deadline = deadline  # unscaled seconds, fast/t21/t100
        self.quirk = quirk        # pregreet, pipeline, sendclose, plain
        self.start = start        # unscaled arrival offset
        self.pipelining = pipelining  # legit: pipelines when offered
        self.marked = marked          # body_checks refuses its message


def population(a, profile, bots, patient, legit):
    rng = random.Random("pop-%d-%s" % (a.seed, profile))
    mix = PROFILES[profile]
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    quirks = [("pregreet", a.q_pregreet), ("pipeline", a.q_pipeline),
              ("sendclose", a.q_sendclose)]
    out = []
    nb = np = 0
    for i in range(a.bots):
        kind = rng.choices(kinds, weights)[0]
        if kind == "patient":
            pool, n = patient, np
            np += 1
        else:
            pool, n = bots, nb
            nb += 1
        host = pool[n] if n < len(pool) else rng.choice(pool)
        deadline = {"fast": rng.uniform(3, 10), "t21": 21.0,
                    "t100": 100.0}.get(kind)
        quirk = "plain"
        if kind != "patient":
            r = rng.random()
            for q, share in quirks:
                if r < share:
                    quirk = q
                    break
                r -= share
        marked = profile == "mtaspam" and rng.random() < a.content_share
        out.append(Session(i, "bot", host, kind, deadline, quirk,
                           rng.uniform(0, a.window), marked=marked))
    for i, h in enumerate(legit):
        out.append(Session(i, "legit", h, start=rng.uniform(0, a.window),
                           pipelining=rng.random() < 0.5))
    out.sort(key=lambda s: s.start)
    return out


def message(token, size, helo, marked=False):
    body = [CONTENT_MARKER] if marked else []
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do."
    n = 0
    while n < size:
        body.append(line)
        n += len(line) + 2
    return ("From: <sender@%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
            "Message-ID: <%s@botsim.test>\r\nDate: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            "\r\n%s\r\n.\r\n" % (helo.strip("[]"), RCPTS[0], token, token,
                                 "\r\n".join(body))).encode()


class Conn:
    """One client connection with the three kinds of patience: an absolute
    deadline, an idle (no byte received) timer, per-reply RFC timeouts."""

    def __init__(self, src, dst, deadline=None, idle=None, connect_to=5.0):
        self.t0 = time.monotonic()
        self.deadline, self.idle = deadline, idle
        self.buf = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.bind((src, 0))
            lim = connect_to
            if deadline:
                lim = max(0.01, min(lim, deadline - self.t0))
            self.sock.settimeout(lim)
            self.sock.connect(dst)
        except socket.timeout:
            self.close()
            raise GiveUp("connect")
        except OSError as e:
            self.close()
            raise Closed("connect: %s" % e)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.t1 = time.monotonic()

    def send(self, data):
        if self.deadline:
            rem = self.deadline - time.monotonic()
            if rem <= 0:
                raise GiveUp("deadline")
            self.sock.settimeout(rem)
        else:
            self.sock.settimeout(60)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise GiveUp("deadline")
        except OSError as e:
            raise Closed("send: %s" % e)

    def _parse(self):
        lines, off = [], 0
        while True:
            j = self.buf.find(b"\n", off)
            if j < 0:
                return None
            line = self.buf[off:j].rstrip(b"\r").decode("latin-1")
            off = j + 1
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                self.buf = self.buf[off:]
                try:
                    return int(line[:3]), lines
                except ValueError:
                    return 0, lines

    def reply(self, step=None):
        t_step = time.monotonic() + step if step else None
        for _ in range(100000):
            r = self._parse()
            if r:
                return r
            now = time.monotonic()
            lims = []
            if self.deadline:
                lims.append((self.deadline - now, "deadline"))
            if t_step:
                lims.append((t_step - now, "timeout"))
            if self.idle:
                lims.append((self.idle, "idle"))
            if not lims:
                lims.append((60.0, "timeout"))
            wait, why = min(lims)
            if wait <= 0:
                raise GiveUp(why)
            self.sock.settimeout(wait)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                raise GiveUp(why)
            except OSError as e:
                raise Closed("recv: %s" % e)
            if not d:
                raise Closed("eof")
            self.buf += d
        raise Closed("too many reads")


class Result:
    def __init__(self):
        self.outcome = None      # delivered-ack, gaveup-*, refused-4xx/5xx,
        self.attempts = 0        # closed, sendclose, error
        self.conn_seconds = 0.0  # scaled
        self.t_first = None
        self.t_done = None       # final 250 received (scaled clock)
        self.first_try = False
        self.detail = ""


def bot_attempt(a, s, dst, token, res):
    """One bot connection. Returns 'retry' for a patient bot's 4xx."""
    K = a.scale
    h = s.host
    now = time.monotonic()
    deadline = now + s.deadline / K if s.deadline else None
    idle = a.idle / K if s.patience == "idle" else None
    step = (lambda k: RFC[k] / K) if s.patience == "patient" else (lambda k: None)
    c = None
    try:
        c = Conn(h.addr, dst, deadline, idle)
        ehlo = s.quirk not in ("pipeline",) and (s.patience == "patient"
                                                 or s.idx % 2 == 0)
        hello = ("EHLO " if ehlo else "HELO ") + h.helo + "\r\n"
        if s.quirk == "pregreet":
            c.send(hello.encode())
        code, _ = c.reply(step("greeting"))
        if code != 220:
            return _refused(res, code, "greeting")
        if s.quirk != "pregreet":
            c.send(hello.encode())
        code, _ = c.reply(step("ehlo"))
        if code != 250:
            return _refused(res, code, "helo")
        mail = "MAIL FROM:<bulk@%s>\r\n" % (h.name or "spam.example")
        rcpt = "RCPT TO:<%s>\r\n" % RCPTS[s.idx % len(RCPTS)]
        if s.quirk == "pipeline":
            c.send((mail + rcpt + "DATA\r\n").encode())
            for what in ("mail", "rcpt", "data"):
                code, _ = c.reply(step(what))
                if code // 100 not in (2, 3):
                    return _refused(res, code, what)
        else:
            for what, cmd, want in (("mail", mail, 2), ("rcpt", rcpt, 2),
                                    ("data", "DATA\r\n", 3)):
                c.send(cmd.encode())
                code, _ = c.reply(step(what))
                if code // 100 != want:
                    return _refused(res, code, what)
        c.send(message(token, a.spam_size, h.helo, s.marked))
        if s.quirk == "sendclose":
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            res.outcome = "sendclose"
            return None
        code, _ = c.reply(step("dot"))
        if code // 100 != 2:
            return _refused(res, code, "dot")
        res.outcome = "delivered-ack"
        res.t_done = time.monotonic()
        try:
            c.send(b"QUIT\r\n")
        except (GiveUp, Closed):
            pass
        return None
    except GiveUp as e:
        res.outcome = "gaveup-%s" % e.args[0]
        return None
    except Closed as e:
        res.outcome = "closed"
        res.detail = str(e)
        return "retry" if s.patience == "patient" else None
    finally:
        if c is not None:
            c.close()
            res.conn_seconds += c.t1 - c.t0


def _refused(res, code, where):
    res.outcome = "refused-%dxx" % (code // 100)
    res.detail = "%d at %s" % (code, where)
    return "retry" if code // 100 == 4 else None


def legit_attempt(a, s, dst, token, res):
    K = a.scale
    h = s.host
    c = None
    try:
        c = Conn(h.addr, dst, connect_to=30.0 / K)
        code, _ = c.reply(RFC["greeting"] / K)
        if code != 220:
            return _refused(res, code, "greeting")
        c.send(("EHLO %s\r\n" % h.helo).encode())
        code, lines = c.reply(RFC["ehlo"] / K)
        if code != 250:
            return _refused(res, code, "ehlo")
        offered = any(l[4:].upper().startswith("PIPELINING") for l in lines)
        mail = "MAIL FROM:<news@%s>\r\n" % h.name
        rcpt = "RCPT TO:<%s>\r\n" % RCPTS[(s.idx + 1) % len(RCPTS)]
        if s.pipelining and offered:
            c.send((mail + rcpt + "DATA\r\n").encode())
            for what, want in (("mail", 2), ("rcpt", 2), ("data", 3)):
                code, _ = c.reply(RFC[what] / K)
                if code // 100 != want:
                    return _refused(res, code, what)
        else:
            for what, cmd, want in (("mail", mail, 2), ("rcpt", rcpt, 2),
                                    ("data", "DATA\r\n", 3)):
                c.send(cmd.encode())
                code, _ = c.reply(RFC[what] / K)
                if code // 100 != want:
                    return _refused(res, code, what)
        c.send(message(token, a.legit_size, h.helo))
        code, _ = c.reply(RFC["dot"] / K)
        if code // 100 != 2:
            return _refused(res, code, "dot")
        res.outcome = "delivered-ack"
        res.t_done = time.monotonic()
        try:
            c.send(b"QUIT\r\n")
            c.reply(RFC["quit"] / K)
        except (GiveUp, Closed):
            pass
        return None
    except GiveUp as e:
        res.outcome = "gaveup-%s" % e.args[0]
        return "retry"
    except Closed as e:
        res.outcome = "closed"
        res.detail = str(e)
        return "retry"
    finally:
        if c is not None:
            c.close()
            res.conn_seconds += c.t1 - c.t0


def run_population(a, sessions, dst, tag):
    """Run every session against dst; returns {(role, idx): Result}."""
    K = a.scale
    sem = threading.BoundedSemaphore(a.concurrency)
    results = {}
    t0 = time.monotonic() + 0.2

    def one(s):
        res = Result()
        results[(s.role, s.idx)] = res
        token = "botsim-%s-%s%d" % (tag, s.role, s.idx)
        delay = t0 + s.start / K - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        res.t_first = time.monotonic()
        retries = a.retries if (s.role == "legit" or s.patience == "patient") else 0
        for attempt in range(retries + 1):
            res.attempts = attempt + 1
            with sem:
                try:
                    if s.role == "bot":
                        again = bot_attempt(a, s, dst, token, res)
                    else:
                        again = legit_attempt(a, s, dst, token, res)
                except Exception as e:  # a bug in here must not hang the run
                    res.outcome = "error"
                    res.detail = repr(e)
                    again = None
            if again != "retry" or attempt == retries:
                break
            time.sleep(RETRY_DELAY / K)
        res.first_try = res.outcome == "delivered-ack" and res.attempts == 1

    threads = [threading.Thread(target=one, args=(s,), daemon=True)
               for s in sessions]
    for t in threads:
        t.start()
    # Bound: arrival window + the longest a session can take (RFC
    # timeouts summed, per attempt, plus retry delays) + slack.
    per_try = sum(RFC.values()) / K
    bound = (a.window / K + (a.retries + 1) * per_try
             + a.retries * RETRY_DELAY / K + 30)
    end = time.monotonic() + bound
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        log("%s: %d sessions still running after %.0f s (daemon threads, "
            "their sockets time out)" % (tag, stuck, bound))
    return results


# ------------------------------------------------------------- back end

def postfix_instance(d, a, ps_port):
    K = a.scale
    greet = max(1, int(round(SLUICE_GREET_WAIT / K)))
    extra = {
        # Stock Postfix 3.7 (Debian 12) unless asked: the harness turns
        # this on, which makes the backend itself drop pre-greeting talkers
        # and unauthorized pipeliners in the direct set-up.
        "smtpd_forbid_unauth_pipelining": a.backend_forbid_pipelining,
        "smtpd_timeout": "%ds" % max(1, round(SMTPD_TIMEOUT / K)),
        "default_process_limit": str(max(200, a.concurrency + 50)),
        "postscreen_dnsbl_sites": "bl.test" if a.lists != "production"
        else PRODUCTION_SITES,
        "postscreen_dnsbl_threshold": "1" if a.lists != "production" else "3",
        # Content verdicts, in every set-up alike (mtaspam's marked share).
        "body_checks": "regexp:{ {/%s/ REJECT botsim content} }" % CONTENT_MARKER,
        "postscreen_dnsbl_action": "enforce",
        "postscreen_greet_action": "enforce",
        "postscreen_greet_wait": "%ds" % greet,
        "postscreen_pipelining_enable": "yes",
        "postscreen_pipelining_action": "enforce",
        "postscreen_non_smtp_command_enable": "yes",
        "postscreen_non_smtp_command_action": "drop",
        "postscreen_bare_newline_enable": "yes",
        "postscreen_bare_newline_action": "enforce",
        "postscreen_command_time_limit": "%ds" % max(1, round(300 / K)),
        "postscreen_dnsbl_timeout": "5s",
        "postscreen_pre_queue_limit": "1000",
        "postscreen_post_queue_limit": "1000",
        "postscreen_client_connection_count_limit": "0",
    }
    master = [("127.0.0.1:%d" % ps_port, "inet", "n", "-", "n", "-", "1",
               "postscreen"),
              ("smtpd", "pass", "-", "-", "n", "-", "-", "smtpd"),
              # chroot: dnsblog reads queue/etc/resolv.conf (our dnsmasq),
              # never the system's resolver
              ("dnsblog", "unix", "-", "-", "y", "-", "0", "dnsblog"),
              ("tlsproxy", "unix", "-", "-", "n", "-", "0", "tlsproxy")]
    pf = harness.Postfix(d, extra=extra, master_extra=master)
    pf.postscreen_greet_wait = greet
    return pf


def write_chroot_resolv(pf, dns_addr):
    etc = os.path.join(pf.dir, "queue", "etc")
    os.makedirs(etc, exist_ok=True)
    os.chmod(etc, 0o755)
    with open(os.path.join(etc, "resolv.conf"), "w") as f:
        f.write("nameserver %s\noptions timeout:1 attempts:2\n" % dns_addr)
    os.chmod(os.path.join(etc, "resolv.conf"), 0o644)


def restart_postfix(pf):
    pf.stop()
    data = os.path.join(pf.dir, "data")
    for n in os.listdir(data):
        if n.startswith("postscreen_cache"):
            os.unlink(os.path.join(data, n))
    pf.start()


def maillog_size(pf):
    try:
        return os.path.getsize(pf.maillog_path)
    except OSError:
        return 0


def maillog_from(pf, off):
    with open(pf.maillog_path, "rb") as f:
        f.seek(off)
        return f.read().decode("utf-8", errors="replace")


def delivered_tokens(pf, prefix):
    found = set()
    pat = re.compile((r"^Subject: (%s\S+)" % re.escape(prefix)).encode(), re.M)
    for u in pf.users:
        p = os.path.join(pf.maildir_base, u, "new")
        try:
            names = os.listdir(p)
        except OSError:
            continue
        for n in names:
            try:
                with open(os.path.join(p, n), "rb") as f:
                    head = f.read(4096)
            except OSError:
                continue
            m = pat.search(head)
            if m:
                found.add(m.group(1).decode())
    return found


def wait_drained(pf, prefix, timeout=60):
    """Wait until the queue is empty and the delivered set is stable."""
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = delivered_tokens(pf, prefix)
        if got != last:
            last, stable_since = got, time.monotonic()
        elif time.monotonic() - stable_since > 2 and not pf.queue_ids_pending():
            return got
        time.sleep(0.5)
    log("queue not drained after %d s" % timeout)
    return last or set()


# ------------------------------------------------------------- sluice

def sluice_setup(a, d, pf, dns_addr, name, shape_time, trickle=False):
    K = a.scale
    port = harness.free_port()
    st = dict(
        listen="127.0.0.1:%d" % port,
        backend="127.0.0.1:%d" % pf.port,
        backend_xclient="yes",
        backend_pool_size=str(a.pool),
        workers="1",
        user="",
        myhostname=harness.SLUICE_HOSTNAME,
        dns_servers="%s:53" % dns_addr,
        spool_dir=harness.make_world_dir(os.path.join(d, "spool")),
        state_dir=harness.make_world_dir(os.path.join(d, "state")),
        shutdown_timeout="2s",
        smtpd_timeout="%dms" % round(SMTPD_TIMEOUT * 1000 / K),
        dnsbl_sites="bl.test" if a.dnsbl_weight == 1 else "bl.test*%d" % a.dnsbl_weight,
        greet_wait="%dms" % round(SLUICE_GREET_WAIT * 1000 / K),
        shape_rate=str(int(round(a.shape_rate * K))),
        shape_time="%dms" % round(shape_time * 1000 / K),
        shape_final_hold="%dms" % round(SLUICE_FINAL_HOLD * 1000 / K),
    )
    if a.lists == "production":
        st.update(dnsbl_sites=PRODUCTION_SITES, reject_threshold=str(PRODUCTION_REJECT))
    if trickle:
        st.update(dnsbl_sites="bl.test*3", greet_wait="0s", shape_time="1d",
                  shape_final_hold="0s", weight_reputation="0")
        for w in ("ptr_missing", "ptr_unconfirmed", "ptr_generic", "pregreet",
                  "helo", "pipelining", "bare_newline", "non_smtp", "errors"):
            st["weight_" + w] = "0"
    for kv in a.sluice_opt:
        k, v = kv.split("=", 1)
        st[k.strip()] = v.strip()
    s = harness.Sluice(d, st, binary=a.sluice)
    s.write_config()
    s.start()
    return s


def sluice_stats(text, pool=()):
    c = lambda pat: len(re.findall(pat, text))  # noqa: E731
    return {
        "pool_shaped": sorted({h for h in pool if re.search(
            r"client=%s SHAPED " % re.escape(h), text)}),
        "content_refused": c(r" CONTENTREFUSED "),
        "rejected_clients": c(r" REJECT score="),
        "shaped": c(r" SHAPED score="),
        "hangup_shaped": c(r" HANGUP after "),
        "earlyclose": c(r" EARLYCLOSE"),
        "pipelining_closed": c(r"pipelining violation"),
        "shape_spent": c(r"shape_time spent"),
        "reputation_signal": c(r"REPUTATION"),
        "errors": [l for l in text.splitlines()
                   if re.search(r"error: |AddressSanitizer|runtime error|"
                                r"killed by signal|exited with status|"
                                r"Segmentation", l)][:10],
        "warnings": [l for l in text.splitlines() if "warning: " in l][:10],
        "n_warnings": c(r"warning: "),
    }


# ------------------------------------------------------------- metrics

def summarize(a, sessions, results, delivered, tag, direct_times):
    K = a.scale
    bots = [s for s in sessions if s.role == "bot"]
    legit = [s for s in sessions if s.role == "legit"]
    tok = lambda s: "botsim-%s-%s%d" % (tag, s.role, s.idx)  # noqa: E731
    spam = sum(1 for s in bots if tok(s) in delivered)
    hung = sum(1 for s in bots if tok(s) not in delivered
               and results[("bot", s.idx)].outcome.startswith("gaveup"))
    refused = sum(1 for s in bots if tok(s) not in delivered
                  and (results[("bot", s.idx)].outcome.startswith("refused")
                       or results[("bot", s.idx)].outcome == "closed"))
    lost_sendclose = sum(1 for s in bots if tok(s) not in delivered
                         and results[("bot", s.idx)].outcome == "sendclose")
    bot_cs = sum(results[("bot", s.idx)].conn_seconds for s in bots) * K
    ldel = [s for s in legit if tok(s) in delivered]
    first = [s for s in ldel if results[("legit", s.idx)].first_try]
    bounced = [s for s in legit if tok(s) not in delivered
               and results[("legit", s.idx)].outcome.startswith("refused-5")]
    times = {}
    for s in ldel:
        r = results[("legit", s.idx)]
        if r.t_done:
            times[s.idx] = (r.t_done - r.t_first) * K
    added = [times[i] - direct_times[i] for i in times if i in direct_times] \
        if direct_times is not None else []
    by_kind = {}
    for s in bots:
        k = s.patience
        by_kind.setdefault(k, [0, 0])
        by_kind[k][0] += 1
        by_kind[k][1] += tok(s) in delivered
    by_quirk = {}
    for s in bots:
        by_quirk.setdefault(s.quirk, [0, 0])
        by_quirk[s.quirk][0] += 1
        by_quirk[s.quirk][1] += tok(s) in delivered
    outcomes = {}
    for s in sessions:
        r = results[(s.role, s.idx)]
        o = "%s:%s" % (s.role, r.outcome)
        if r.outcome and r.outcome.startswith("refused"):
            o += " (%s)" % r.detail
        outcomes[o] = outcomes.get(o, 0) + 1
    legit_fail = ["%s %s: %s %s (attempts %d)" % (
        s.host.kind, s.host.addr, results[("legit", s.idx)].outcome,
        results[("legit", s.idx)].detail, results[("legit", s.idx)].attempts)
        for s in legit if s not in first]
    return {
        "bots": len(bots), "spam": spam, "hung_up": hung, "refused": refused,
        "sendclose_lost": lost_sendclose,
        "bot_conn_seconds": bot_cs,
        "bot_cs_per_spam": (bot_cs / spam) if spam else None,
        "legit": len(legit), "legit_delivered": len(ldel),
        "legit_first_try": len(first), "legit_bounced": len(bounced),
        "legit_listed_first_try": sum(1 for s in first if s.host.listed),
        "legit_listed": sum(1 for s in legit if s.host.listed),
        "legit_times": times,
        "added_median": statistics.median(added) if added else None,
        "added_max": max(added) if added else None,
        "by_patience": by_kind, "by_quirk": by_quirk, "outcomes": outcomes,
        "legit_failures": legit_fail,
    }


def fmt_s(x):
    return "-" if x is None else ("%.1f" % x if abs(x) < 10 else "%.0f" % x)


def pct(n, d):
    return "%.1f %%" % (100.0 * n / d) if d else "-"


def print_table(profile, rows, a):
    print()
    print("### profile %s  (K=%g, %d bot sessions, %d legitimate senders, "
          "seed %d)" % (profile, a.scale, a.bots, a.legit, a.seed))
    print()
    print("| set-up | bots hung up before delivery | spam delivered | "
          "legit delivered first try | legit delivered in the end | legit "
          "added delay median / max (s) | backend connections | bot "
          "connection-s per spam delivered |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows:
        print("| %s | %s | %s (%d) | %d/%d | %d/%d%s | %s / %s | %d | %s |" % (
            name, pct(m["hung_up"], m["bots"]), pct(m["spam"], m["bots"]),
            m["spam"], m["legit_first_try"], m["legit"], m["legit_delivered"],
            m["legit"], (", %d bounced" % m["legit_bounced"]) if m["legit_bounced"] else "",
            fmt_s(m["added_median"]), fmt_s(m["added_max"]),
            m["backend_connections"],
            fmt_s(m["bot_cs_per_spam"]) if m["spam"] else "∞ (%.0f s, none delivered)" % m["bot_conn_seconds"]))
    print()
    for name, m in rows:
        bp = " ".join("%s=%d/%d" % (k, v[1], v[0]) for k, v in sorted(m["by_patience"].items()))
        bq = " ".join("%s=%d/%d" % (k, v[1], v[0]) for k, v in sorted(m["by_quirk"].items()))
        extra = ""
        if "sluice" in m:
            x = m["sluice"]
            extra = (" | sluice: shaped=%d hangup_shaped=%d earlyclose=%d "
                     "pipelining_closed=%d shape_time_spent=%d content_refused=%d "
                     "rejected_clients=%d provider_pool_shaped=%d errors=%d warnings=%d"
                     % (x["shaped"], x["hangup_shaped"], x["earlyclose"],
                        x["pipelining_closed"], x["shape_spent"], x["content_refused"],
                        x["rejected_clients"], len(x["pool_shaped"]), len(x["errors"]),
                        x["n_warnings"]))
        print("- %s: spam by patience %s; by quirk %s; wall %.0f s%s" % (
            name, bp, bq, m["wall"], extra))
        for f in m["legit_failures"][:8]:
            print("  - legit not first try: %s" % f)
    sys.stdout.flush()


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="all")
    ap.add_argument("--scale", type=float, default=10.0, help="time compression K")
    ap.add_argument("--setups", default="direct,sluice,postscreen")
    ap.add_argument("--shape-time", default="120",
                    help="sluice shape_time(s) in real seconds, comma list")
    ap.add_argument("--shape-rate", type=float, default=SLUICE_SHAPE_RATE,
                    help="sluice shape_rate in real bytes/s (multiplied by K)")
    ap.add_argument("--lists", default="single", choices=("single", "production"),
                    help="single: bl.test lists with 127.0.0.2; production: ZEN "
                    "codes and docs/classification.md's weights")
    ap.add_argument("--content-share", type=float, default=0.5,
                    help="mtaspam: share of messages body_checks refuses")
    ap.add_argument("--pool-legit", type=int, default=0,
                    help="legitimate senders in the bots' first /24")
    ap.add_argument("--dnsbl-weight", type=int, default=1,
                    help="weight of bl.test for sluice (1: no weight given)")
    ap.add_argument("--bots", type=int, default=200)
    ap.add_argument("--legit", type=int, default=40)
    ap.add_argument("--legit-listed", type=float, default=0.2,
                    help="share of legitimate senders on listed addresses")
    ap.add_argument("--bot-addrs", type=int, default=150)
    ap.add_argument("--patient-addrs", type=int, default=40)
    ap.add_argument("--bot-listed", type=float, default=1.0,
                    help="share of bot addresses that are listed")
    ap.add_argument("--bot-ptr-generic", type=float, default=0.5,
                    help="share of bot addresses with a generic PTR (rest: none)")
    ap.add_argument("--bot-helo-bad", type=float, default=0.5)
    ap.add_argument("--q-pregreet", type=float, default=0.25)
    ap.add_argument("--q-pipeline", type=float, default=0.25)
    ap.add_argument("--q-sendclose", type=float, default=0.15)
    ap.add_argument("--idle", type=float, default=30.0,
                    help="idle-timer bots give up after this much silence (s)")
    ap.add_argument("--retries", type=int, default=1,
                    help="retries after a 4xx (legit and patient bots)")
    ap.add_argument("--window", type=float, default=120.0,
                    help="arrival window (real seconds)")
    ap.add_argument("--concurrency", type=int, default=150)
    ap.add_argument("--spam-size", type=int, default=1500)
    ap.add_argument("--legit-size", type=int, default=4000)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backend-forbid-pipelining", default="no",
                    choices=("yes", "no"),
                    help="smtpd_forbid_unauth_pipelining of the backend "
                    "(no: Postfix 3.7 default)")
    ap.add_argument("--sluice", default=os.environ.get("SLUICE",
                                                        os.path.join(ROOT, "sluice")))
    ap.add_argument("--sluice-opt", action="append", default=[],
                    help="extra sluice setting name=value (repeatable)")
    ap.add_argument("--json", help="write all figures to this file")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if os.getuid() != 0:
        sys.exit("botsim.py: run as root (Postfix, dnsmasq on port 53)")
    profiles = PROFILE_ORDER if a.profile == "all" else a.profile.split(",")
    for p in profiles:
        if p not in PROFILES:
            sys.exit("unknown profile %s (have %s)" % (p, ", ".join(PROFILE_ORDER)))
    setups = []
    for s in a.setups.split(","):
        if s == "sluice":
            sts = [float(x) for x in a.shape_time.split(",")]
            for v in sts:
                setups.append(("sluice" if len(sts) == 1 else
                               "sluice st=%gs" % v, "sluice", v))
        elif s in ("direct", "postscreen", "trickle"):
            setups.append((s, s, None))
        else:
            sys.exit("unknown set-up %s" % s)
    if setups[0][1] != "direct":
        log("no direct set-up first: legit added delay is not computed")

    K = a.scale
    d = tempfile.mkdtemp(prefix="bsim-", dir="/tmp")  # short: postlog path
    os.chmod(d, 0o755)
    bots, patient, legit = address_plan(a)
    dns = Dns(os.path.join(d, "dns"), bots + patient + legit)
    pf = None
    sl = None
    failed = False
    all_out = {"args": vars(a), "profiles": {}}
    t_run = time.monotonic()
    try:
        dns.start()
        ps_port = harness.free_port()
        pf = postfix_instance(os.path.join(d, "pf"), a, ps_port)
        pf.write_config()
        write_chroot_resolv(pf, dns.addr)
        pf.start()
        if not harness.wait_listening(ps_port, 10):
            raise RuntimeError("postscreen does not listen")
        print("# botsim K=%g bots=%d legit=%d (listed share %.2f) setups=%s "
              "sluice=%s dns=%s:53 backend=127.0.0.1:%d postscreen=127.0.0.1:%d "
              "(postscreen_greet_wait=%ds; sluice greet_wait=%gs shape_rate=%d "
              "dnsbl weight %d; backend smtpd_forbid_unauth_pipelining=%s)" % (
                  K, a.bots, a.legit, a.legit_listed,
                  ",".join(s[0] for s in setups), a.sluice, dns.addr, pf.port,
                  ps_port, pf.postscreen_greet_wait, SLUICE_GREET_WAIT / K,
                  a.shape_rate * K, a.dnsbl_weight,
                  a.backend_forbid_pipelining), flush=True)
        rate = int(round(a.shape_rate * K))
        per_tick = 1 if rate < 10 else rate // 10
        prod_tick = 1 if a.shape_rate < 10 else int(a.shape_rate) // 10
        print("# sluice token bucket: %d byte(s) per tick at shape_rate=%d "
              "(unscaled shape_rate=%g: %d)%s" % (
                  per_tick, rate, a.shape_rate, prod_tick,
                  "" if per_tick == prod_tick else
                  " -- differs: shaped reads come in larger chunks than in "
                  "production, which lets sluice see more pipelining "
                  "(see bench/botsim.md)"), flush=True)
        runid = "%x" % (int(time.time()) & 0xffffff)
        for profile in profiles:
            sessions = population(a, profile, bots, patient, legit)
            restart_postfix(pf)
            rows = []
            direct_times = None
            for name, kind, st in setups:
                tag = "%s-%s-%s" % (runid, profile, re.sub(r"[^a-z0-9]", "", name))
                sd = os.path.join(d, "sl-%s" % tag)
                if kind in ("sluice", "trickle"):
                    sl = sluice_setup(a, sd, pf, dns.addr, name,
                                      st if st is not None else 90,
                                      trickle=(kind == "trickle"))
                    dst = ("127.0.0.1", sl.port)
                elif kind == "postscreen":
                    dst = ("127.0.0.1", ps_port)
                else:
                    dst = ("127.0.0.1", pf.port)
                off = maillog_size(pf)
                t0 = time.monotonic()
                log("profile %s set-up %s ..." % (profile, name))
                results = run_population(a, sessions, dst, tag)
                wall = time.monotonic() - t0
                delivered = wait_drained(pf, "botsim-%s-" % tag)
                text = maillog_from(pf, off)
                m = summarize(a, sessions, results, delivered, tag, direct_times)
                m["wall"] = wall
                m["backend_connections"] = len(re.findall(
                    r"postfix/smtpd\[\d+\]: connect from", text))
                m["postscreen_log"] = {
                    "dnsbl_rank": len(re.findall(r"DNSBL rank", text)),
                    "pregreet": len(re.findall(r"PREGREET", text)),
                    "pipelining": len(re.findall(r"COMMAND PIPELINING", text)),
                    "pass_new": len(re.findall(r"PASS NEW", text)),
                    "pass_old": len(re.findall(r"PASS OLD", text)),
                } if kind == "postscreen" else None
                if kind in ("sluice", "trickle"):
                    sl.stop()
                    m["sluice"] = sluice_stats(sl.log(), [
                        h.addr for h in legit if h.kind == "legit-pool"])
                    m["sluice_exit"] = sl.exit_code
                    if m["sluice"]["errors"]:
                        failed = True
                        log("sluice logged errors: %s" % m["sluice"]["errors"])
                    sl = None
                if kind == "direct":
                    direct_times = m["legit_times"]
                rows.append((name, m))
                log("  %s: spam %d/%d, legit first try %d/%d, %.0f s" % (
                    name, m["spam"], m["bots"], m["legit_first_try"], m["legit"],
                    wall))
            print_table(profile, rows, a)
            all_out["profiles"][profile] = {
                n: {k: v for k, v in m.items() if k != "legit_times"}
                for n, m in rows}
        print("\n# total wall time %.0f s" % (time.monotonic() - t_run))
    finally:
        if sl is not None:
            sl.stop()
        if pf is not None:
            pf.stop()
        dns.stop()
        if a.json:
            with open(a.json, "w") as f:
                json.dump(all_out, f, indent=1, default=str)
        if a.keep or failed:
            log("work directory kept: %s" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
