"""
The shared store (store = redis): reputation and passes written through
Redis by one sluice are seen by another (two machines), and Redis that
loses its data, is down, or stops answering changes only classification:
sessions get their greeting within the bound and deliver (HOSTILE L.110,
M.111).

Each test starts its own redis-server on 127.0.0.1 on a free high port,
with its own directory and no persistence (--save '' --appendonly no),
and stops it at the end; the system's Redis, if any, is never touched.
Two sluice instances share one Redis the way two machines would: separate
directories, ports and processes, the same redis_server and redis_prefix.

Every wait is bounded in time, every loop in count and time.
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import time
import uuid

import pytest

import harness
from harness import SmtpRaw, dot_stuff

GREET_WAIT = 2.0
REDIS_TIMEOUT = 0.3
NO_PTR = harness.NO_PTR_ADDRS[0]  # 127.0.0.66: NOPTR, weight 1
CLEAN = harness.bulk_client_addrs(3)  # FCrDNS names, another /24


def net_key(client):
    """The Redis key of an IPv4 client's /24 (store_redis.c layout)."""
    return "sluice:rep:{%s.0/24}" % client.rsplit(".", 1)[0]


def rep_key(client):
    """The client's own record: hash-tagged with its network."""
    return net_key(client) + client


# ------------------------------------------------------------ redis-server

class RedisServer:
    """A private redis-server on 127.0.0.1:port, data in memory only."""

    def __init__(self, d, port=None, unix=False):
        self.dir = harness.make_world_dir(d)
        self.port = port or harness.free_port()
        self.unix = os.path.join(self.dir, "redis.sock") if unix else None
        self.proc = None
        self.paused = False

    def start(self, timeout=15):
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", self.dir, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", self.log_path,
             "--databases", "1"]
            + (["--unixsocket", self.unix, "--unixsocketperm", "777"]
               if self.unix else []),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self.paused = False
        ok = harness.wait_until(self._pings, timeout, 0.05)
        if not ok:
            self.stop()
            raise RuntimeError("redis-server did not answer on port %d" % self.port)
        return self

    def _pings(self):
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server exited (%r)" % self.proc.returncode)
        try:
            return self.cmd("PING", timeout=1) == "PONG"
        except OSError:
            return False

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout=10):
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            if self.paused:
                self.resume()
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.proc = None

    def cmd(self, *args, timeout=5):
        """One command; the reply as str, int, list, None, or RedisError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")
            return _resp(f)


class RedisError(Exception):
    pass


def _resp(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("short reply from redis: %r" % line)
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp(f) for _ in range(n)]
    raise OSError("unknown reply from redis: %r" % line)


# ----------------------------------------------------------------- fixtures

def _test_failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture
def redis_server(request, workdir):
    started = []

    def make(name="redis", unix=False):
        r = RedisServer(os.path.join(workdir, name), unix=unix)
        started.append(r)
        return r.start()

    yield make
    for r in started:
        r.stop()
        if _test_failed(request):
            try:
                with open(r.log_path, "rb") as f:
                    print("\n--- redis %d log (tail) ---\n%s" % (
                        r.port, f.read()[-3000:].decode(errors="replace")))
            except OSError:
                pass


@pytest.fixture
def sluices(request, workdir, sluice_settings, postfix, redis_server):
    """sluices(pf, name, redis, **settings): a sluice with its own
    directory (a machine of its own) on the shared store redis. Stopped
    before Postfix and Redis."""
    started = []

    def make(pf, name, redis, **settings):
        d = os.path.join(workdir, name)
        s = {
            "store": "redis",
            "redis_server": ("unix:" + redis.unix) if redis.unix
            else "127.0.0.1:%d" % redis.port,
            "redis_timeout": "%dms" % int(REDIS_TIMEOUT * 1000),
            "redis_prefix": "sluice:",
            "greet_wait": "%gs" % GREET_WAIT,
            "shape_threshold": "3",
            "shape_rate": "50",
            "shape_time": "30s",
            "metrics_listen": "127.0.0.1:%d" % harness.free_port(),
            "spool_dir": os.path.join(d, "spool"),
            "state_dir": os.path.join(d, "state"),
        }
        s.update({k: str(v) for k, v in settings.items()})
        sl = harness.Sluice(d, sluice_settings(pf, **s))
        sl.metrics_port = int(s["metrics_listen"].rsplit(":", 1)[1])
        sl.write_config()
        started.append(sl)
        sl.start()
        return sl

    yield make
    reports = []
    for sl in started:
        alive = sl.alive()
        rc = sl.stop()
        if _test_failed(request) or not alive:
            print("\n--- sluice %s (alive at teardown: %s, exit %r) log tail ---\n%s"
                  % (sl.dir, alive, rc, sl.log()[-8000:]))
        # Shutdown closes the store: a leak or a late callback shows here
        # (ASan + UBSan build).
        reports += [l for l in sl.log().splitlines()
                    if "Sanitizer" in l or "runtime error" in l]
    if reports:
        pytest.fail("sanitizer reports:\n" + "\n".join(reports[:20]), pytrace=False)


# ------------------------------------------------------------------ helpers

def token(tag):
    return "rds-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok):
    t = tok.encode()
    return (b"From: Redis tests <a@example.net>\r\n"
            b"To: <alice@example.com>\r\n"
            b"Subject: " + t + b"\r\n"
            b"Date: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            b"Message-ID: <" + t + b"@example.net>\r\n"
            b"\r\nHello from the Redis tests.\r\n")


def deliver(sl, source, tok, greet_timeout=15):
    """One message from source through sl; asserts every reply. Returns
    the seconds from connect to the complete greeting."""
    t0 = time.monotonic()
    with SmtpRaw(sl.host, sl.port, source=source, timeout=30) as c:
        code, text = c.read_reply(greet_timeout)
        greeted = time.monotonic() - t0
        assert code == 220, (code, text)
        c.ehlo("mail.example.net")
        rr, final = c.send_message("sender@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok)))
        assert rr[0][0] == 250 and rr[0][1][0].startswith("2.1.5"), rr
        assert final is not None, rr
        assert final[0] == 250 and final[1][0].startswith("2.0.0"), final
        code, text = c.cmd("QUIT")
        assert code == 221 and text[0].startswith("2.0.0"), (code, text)
    return greeted


def metrics(sl):
    conn = http.client.HTTPConnection("127.0.0.1", sl.metrics_port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 200, r.status
        text = r.read().decode("utf-8", errors="replace")
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("sluice_store_redis_"):
            name, value = line.rsplit(" ", 1)
            out[name[len("sluice_store_redis_"):]] = float(value)
    return out


def session_log(sl, addr):
    ids = set(re.findall(r"session=(\d+) connect from %s port=" % re.escape(addr),
                         sl.log()))
    return [l for l in sl.log().splitlines()
            if (lambda m: m and m.group(1) in ids)(re.search(r"session=(\d+) ", l))]


def wait_log(sl, pattern, timeout=10):
    rx = re.compile(pattern)
    return harness.wait_until(lambda: rx.search(sl.log()), timeout)


def log_count(sl, pattern):
    return len(re.findall(pattern, sl.log()))


def assert_healthy(*sls):
    for sl in sls:
        assert sl.alive(), "sluice exited; log:\n" + sl.log()[-4000:]
        bad = [l for l in sl.log().splitlines()
               if "killed by signal" in l or "AddressSanitizer" in l
               or "runtime error" in l]
        assert not bad, "\n".join(bad)


def wait_key(redis, key, timeout=10):
    return harness.wait_until(lambda: redis.cmd("EXISTS", key) == 1, timeout)


def wait_messages(pf, toks, timeout=30):
    want = set(toks)
    got = pf.wait_messages(len(want), timeout, lambda m: m.subject in want)
    assert {m.subject for m in got} == want, (
        "lost: %s" % sorted(want - {m.subject for m in got}))


# ------------------------------------------------------------------- tests

@pytest.mark.deadline(120)
def test_redis_hostile_110_redis_loses_writes(postfix, sluices, redis_server):
    """A pass written through Redis by sluice A holds at sluice B (two
    machines, one Redis). Redis then loses everything (FLUSHALL, then a
    restart without persistence): sessions still deliver, only their
    classification changes, and no message is lost."""
    pf = postfix()
    r = redis_server()
    a = sluices(pf, "a", r)
    b = sluices(pf, "b", r)
    client = CLEAN[0]
    toks = []

    # Unknown everywhere: the greeting waits greet_wait, at A.
    toks.append(token("a1"))
    took = deliver(a, client, toks[-1])
    assert took >= GREET_WAIT - 0.25, took
    # Clean and delivered: A grants a pass and records a delivery.
    assert wait_key(r, "sluice:pass:%s" % client), r.cmd("KEYS", "*")
    assert wait_key(r, rep_key(client)), r.cmd("KEYS", "*")
    expires = int(r.cmd("GET", "sluice:pass:%s" % client))
    assert expires > time.time() * 1000, expires
    assert 0 < r.cmd("PTTL", "sluice:pass:%s" % client) <= 86400 * 1000
    good, bad, content, t = r.cmd("HMGET", rep_key(client), "g", "b", "c", "t")
    assert float(good) == 1.0 and float(bad) == 0.0 and float(content) == 0.0, \
        (good, bad, content, t)
    # The /24 counts distinct addresses: one good one.
    assert float(r.cmd("HGET", net_key(client), "g")) == 1.0
    assert r.cmd("PTTL", rep_key(client)) > 0  # decays away
    # Redis holds reputation and passes, nothing else (no delivery state).
    keys = r.cmd("KEYS", "*")
    assert keys and all(re.match(r"^sluice:(rep|pass):[0-9./{}]+$", k) for k in keys), keys

    # At B the pass written by A holds: greeted at once.
    toks.append(token("b1"))
    took = deliver(b, client, toks[-1])
    assert took < GREET_WAIT - 0.5, took
    assert [l for l in session_log(b, client) if " PASS " in l], session_log(b, client)
    # Two deliveries of one client: its record counts both, its /24 counts
    # the client once (the Lua script's distinct-address rule).
    assert harness.wait_until(
        lambda: float(r.cmd("HGET", rep_key(client), "g") or 0) > 1.99, 10), \
        r.cmd("HGETALL", rep_key(client))
    assert abs(float(r.cmd("HGET", net_key(client), "g")) - 1.0) < 0.01, \
        r.cmd("HGETALL", net_key(client))

    # Redis loses every write: only the classification changes.
    assert r.cmd("FLUSHALL") == "OK"
    toks.append(token("b2"))
    took = deliver(b, client, toks[-1])
    assert took >= GREET_WAIT - 0.25, took

    # A restart without persistence: empty, and sluice reconnects.
    before = metrics(a)
    r.stop()
    toks.append(token("a2"))
    took = deliver(a, client, toks[-1])  # during the outage
    assert took < GREET_WAIT + REDIS_TIMEOUT + 1.5, took
    r.start()
    assert r.cmd("DBSIZE") == 0
    for sl in (a, b):  # back-off: at most 2 s between attempts
        assert harness.wait_until(lambda: metrics(sl)["connected"] == 1, 10), metrics(sl)
    toks.append(token("a3"))
    took = deliver(a, client, toks[-1])
    assert took >= GREET_WAIT - 0.25, took  # the pass went with the data
    # A's writes reach the new Redis, and B reads them: a pass again.
    assert wait_key(r, "sluice:pass:%s" % client, 15), r.cmd("KEYS", "*")
    toks.append(token("b3"))
    took = deliver(b, client, toks[-1])
    assert took < GREET_WAIT - 0.5, took
    after = metrics(a)
    assert after["connection_failures_total"] > before["connection_failures_total"], after
    assert after["connected"] == 1, after

    wait_messages(pf, toks)
    assert_healthy(a, b)


@pytest.mark.deadline(150)
def test_redis_hostile_111_redis_down_or_slow(postfix, sluices, redis_server):
    """Redis stopped, then frozen (SIGSTOP): every session gets its
    greeting within greet_wait + redis_timeout and delivers; the failures
    are counted and logged once, not per session; once Redis is back,
    look-ups answer again."""
    pf = postfix()
    r = redis_server()
    sl = sluices(pf, "a", r)
    bound = GREET_WAIT + REDIS_TIMEOUT + 1.0  # slack for a loaded machine
    toks = []

    toks.append(token("up"))
    deliver(sl, CLEAN[0], toks[-1])
    m0 = metrics(sl)
    assert m0["connected"] == 1 and m0["lookups_total"] >= 1, m0
    assert m0["lookup_failures_total"] == 0 and m0["lookup_timeouts_total"] == 0, m0

    # Down: look-ups fail at once; one log line for all the sessions.
    r.stop()
    assert wait_log(sl, r"store: redis 127\.0\.0\.1:%d unreachable: .*sessions "
                    r"continue without shared reputation" % r.port, 10), sl.log()[-3000:]
    for i in range(3):
        toks.append(token("down%d" % i))
        took = deliver(sl, CLEAN[1], toks[-1])
        assert took <= bound, took
    m1 = metrics(sl)
    assert m1["connected"] == 0, m1
    assert m1["lookup_failures_total"] >= 3, m1
    assert m1["write_failures_total"] > m0["write_failures_total"], m1
    assert log_count(sl, r"unreachable: ") == 1, sl.log()[-3000:]

    # Back: the worker reconnects by itself (back-off at most 2 s).
    r.start()
    assert harness.wait_until(lambda: metrics(sl)["connected"] == 1, 10), metrics(sl)
    toks.append(token("back"))
    deliver(sl, CLEAN[2], toks[-1])
    m2 = metrics(sl)
    assert m2["lookup_failures_total"] == m1["lookup_failures_total"], (m1, m2)
    assert m2["lookup_timeouts_total"] == 0, m2
    assert wait_key(r, "sluice:pass:%s" % CLEAN[2]), r.cmd("KEYS", "*")

    # Frozen: connected, but no answer. Greetings wait redis_timeout at
    # most; greet_wait 0 shows it is redis_timeout that bounds them.
    sl0 = sluices(pf, "b", r, greet_wait="0s")
    r.pause()
    try:
        for i in range(3):
            toks.append(token("frozen%d" % i))
            took = deliver(sl0, CLEAN[0], toks[-1])
            assert took <= REDIS_TIMEOUT + 1.0, took
            took = deliver(sl, CLEAN[1], toks[-1] + "x")
            toks.append(toks[-1] + "x")
            assert took <= bound, took
        m3 = metrics(sl0)
        assert m3["lookup_timeouts_total"] >= 1, m3
        assert log_count(sl0, r"look-up timed out after 300 ms") == 1, sl0.log()[-3000:]
        # Nothing answered for a while: the connection is made again.
        assert wait_log(sl0, r"not answering for \d+ ms", 10), sl0.log()[-3000:]
    finally:
        r.resume()

    # Thawed: look-ups answer again, the pass of CLEAN[2] is read.
    assert wait_log(sl0, r"store: redis 127\.0\.0\.1:%d answering again" % r.port, 15), \
        sl0.log()[-3000:]
    t_before = metrics(sl0)["lookup_timeouts_total"]
    toks.append(token("thawed"))
    took = deliver(sl0, CLEAN[2], toks[-1])
    assert took <= REDIS_TIMEOUT + 1.0, took
    assert [l for l in session_log(sl0, CLEAN[2]) if " PASS " in l], session_log(sl0, CLEAN[2])
    assert metrics(sl0)["lookup_timeouts_total"] == t_before

    wait_messages(pf, toks)
    assert_healthy(sl, sl0)


@pytest.mark.deadline(120)
def test_redis_shared_reputation_shapes_at_other_sluice(postfix, sluices, redis_server):
    """Harvesting at sluice A (every recipient refused as unknown, 5.1.1)
    is bad evidence in Redis; the same client is then shaped at sluice B,
    and a clean client is not."""
    pf = postfix()
    r = redis_server()
    a = sluices(pf, "a", r)
    b = sluices(pf, "b", r)

    with SmtpRaw(a.host, a.port, source=NO_PTR, timeout=30) as c:
        assert c.read_reply(15)[0] == 220
        c.ehlo("mail.example.net")
        c.expect("MAIL FROM:<sender@example.net>", 250)
        for i in range(4):
            code, text = c.cmd("RCPT TO:<nosuchuser%d@example.com>" % i)
            assert code == 550 and text[0].startswith("5.1.1"), (code, text)
        code, text = c.cmd("QUIT")
        assert code == 221, (code, text)
    # Four of four unknown: one harvesting outcome for the address, and
    # one bad address for its /24.
    key = rep_key(NO_PTR)

    def bad_weight():
        v = r.cmd("HMGET", key, "g", "b", "c", "t")
        return v[1] is not None and float(v[1]) >= 0.99
    assert harness.wait_until(bad_weight, 10), r.cmd("HGETALL", key)
    assert float(r.cmd("HGET", net_key(NO_PTR), "b")) >= 0.99
    assert not [l for l in session_log(a, NO_PTR) if " SHAPED " in l]

    # At B: reputation -0.5 (weight 2) + NOPTR (1) = the threshold.
    with SmtpRaw(b.host, b.port, source=NO_PTR, timeout=30) as c:
        assert c.read_reply(20)[0] == 220
    assert wait_log(b, r"client=%s REPUTATION weight=2 " % re.escape(NO_PTR), 10), \
        "\n".join(session_log(b, NO_PTR))
    assert [l for l in session_log(b, NO_PTR) if " SHAPED " in l], session_log(b, NO_PTR)

    tok = token("clean")
    deliver(b, CLEAN[0], tok)
    assert not [l for l in session_log(b, CLEAN[0])
                if " SHAPED " in l or " REPUTATION " in l], session_log(b, CLEAN[0])
    wait_messages(pf, [tok])
    assert_healthy(a, b)


@pytest.mark.deadline(90)
def test_redis_hostile_111_garbage_records_read_as_none(postfix, sluices, redis_server):
    """Records sluice did not write (wrong types, non-numbers, NaN,
    overlong numbers) read as no record and are counted; the session goes
    on with the default classification, and the next write replaces
    them."""
    pf = postfix()
    r = redis_server()
    sl = sluices(pf, "a", r)
    client = CLEAN[1]
    r.cmd("SET", rep_key(client), "not a hash")
    r.cmd("HSET", net_key(client), "g", "nan", "b", "1", "c", "0", "t", "1")
    r.cmd("RPUSH", "sluice:pass:%s" % client, "x")
    tok = token("garbage")
    took = deliver(sl, client, tok)
    assert took >= GREET_WAIT - 0.25, took  # no pass read from a list
    m = metrics(sl)
    assert m["bad_replies_total"] >= 3, m
    assert m["lookup_timeouts_total"] == 0 and m["lookup_failures_total"] == 0, m
    assert not [l for l in session_log(sl, client) if " REPUTATION " in l]
    # The delivery's writes replace the garbage with sluice's own records.
    assert harness.wait_until(
        lambda: r.cmd("TYPE", "sluice:pass:%s" % client) == "string", 10)
    assert harness.wait_until(
        lambda: r.cmd("HGET", rep_key(client), "g") == "1", 10)
    r.cmd("HSET", rep_key(client), "g", "9" * 80)
    tok2 = token("garbage2")
    deliver(sl, client, tok2)  # the pass is sluice's own again
    assert metrics(sl)["bad_replies_total"] >= 4
    assert log_count(sl, r"unexpected reply to") == 1, sl.log()[-3000:]
    wait_messages(pf, [tok, tok2])
    assert_healthy(sl)


@pytest.mark.deadline(60)
def test_redis_unix_socket(postfix, sluices, redis_server):
    """redis_server = unix:/path works as host:port does."""
    pf = postfix()
    r = redis_server(unix=True)
    sl = sluices(pf, "a", r, redis_prefix="other:")
    tok = token("unix")
    deliver(sl, CLEAN[0], tok)
    assert wait_key(r, "other:pass:%s" % CLEAN[0]), r.cmd("KEYS", "*")
    took = deliver(sl, CLEAN[0], tok + "2")
    assert took < GREET_WAIT - 0.5, took
    assert metrics(sl)["connected"] == 1
    assert "store: redis unix:%s connected" % r.unix in sl.log()
    wait_messages(pf, [tok, tok + "2"])
    assert_healthy(sl)


def test_redis_sluicectl_entries_shared(postfix, sluices, redis_server):
    """sluicectl deny on one sluice lands in Redis (<prefix>acl), the other
    sluice applies it within its re-read period, and it survives a restart;
    forget removes it from Redis."""
    from test_control import ctl, ctl_json, verdict
    pf = postfix()
    r = redis_server()
    a = sluices(pf, "a", r)
    b = sluices(pf, "b", r)
    client = CLEAN[0]
    assert not verdict(b, client)["shaped"]
    rc, out, err = ctl(a, "deny", client, "1h")
    assert rc == 0, err
    h = r.cmd("HGETALL", "sluice:acl")
    assert h[0] == client + "/32" and h[1].startswith("2 "), h
    # b reads it from Redis within CONTROL_REDIS_POLL_S (10 s)
    wait_log(b, r"control: 1 allow/deny entries in force", 15)
    row = verdict(b, client)
    assert row["shaped"] and "DENYLIST" in row["signals"], row
    assert [e["net"] for e in ctl_json(b, "list")["entries"]] == [client + "/32"]
    a.stop()
    a.start()
    assert verdict(a, client)["shaped"]
    rc, out, err = ctl(b, "forget", client)
    assert rc == 0 and "entry removed" in out, (out, err)
    assert r.cmd("HGETALL", "sluice:acl") == []
    assert not verdict(b, client)["shaped"]
