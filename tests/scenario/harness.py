"""
harness: real components for sluice's scenario tests, and for `make run`.

What it gives (no pytest in here, so scripts/run-demo.sh can use it too):

  Postfix  a private Postfix instance in one directory: its own main.cf and
           master.cf (config_directory), queue_directory, data_directory,
           maillog_file and maildirs all under it; smtpd on one loopback
           port; delivery with virtual(8) to maildirs for example.com.
  Dnsmasq  a private authoritative-only DNS server on 127.0.0.1:<port>:
           PTR + A records for the test client addresses, blocklist and
           allowlist zones bl.test / wl.test, NXDOMAIN for everything else
           it is local for, and no upstream servers at all.
  Sluice   writes a sluice configuration, runs SLUICE_BIN -f -c FILE in its
           own process group with stderr in a log file, stops it.
  SmtpRaw  a byte-level SMTP client bound to a chosen 127.0.0.x address.
  dns_query  a tiny raw DNS client (no system resolver is ever used).

Everything started here is stopped by its stop() method, which is safe to
call twice and after a failed start; every wait is bounded in time.

Command line (used by scripts/run-demo.sh):
  python3 harness.py demo-setup DIR   set up (or reuse) Postfix on
                                      127.0.0.1:10025 and dnsmasq on
                                      127.0.0.1:5353 under DIR, write
                                      DIR/sluice.conf, print its path.
"""

import calendar
import http.client
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------- constants

USERS = ("alice", "bob", "carol", "dave")
DOMAIN = "example.com"
POSTFIX_HOSTNAME = "pf.test"
SLUICE_HOSTNAME = "sluice.test"
VMAIL_UID = 65534  # nobody: virtual(8) refuses uid 0 (virtual_minimum_uid)
VMAIL_GID = 65534

# Client addresses that have forward-confirmed reverse DNS in Dnsmasq.
CLIENT23 = "127.0.0.23"
CLIENT23_NAME = "client23.example"
# Addresses with no PTR record at all (NXDOMAIN).
NO_PTR_ADDRS = ("127.0.0.66", "127.0.0.67")
# Address listed in bl.test / wl.test (for classifier work; no core test
# uses them, so core clients are never on a list).
BLOCKLISTED = "127.0.0.99"
ALLOWLISTED = "127.0.0.98"
# A second blocklisted address (bl.test only, no PTR), for tests that need
# two listed clients whose logs must not mix.
BLOCKLISTED2 = "127.0.0.97"


def bulk_client_addrs(n):
    """n distinct addresses 127.0.1.1, 127.0.1.2, ... (skipping .0/.255),
    each with FCrDNS name h<b>-<c>.clients.example in Dnsmasq."""
    out = []
    b, c = 1, 1
    while len(out) < n:
        out.append("127.0.%d.%d" % (b, c))
        c += 1
        if c == 255:
            b, c = b + 1, 1
        if b > 250:
            raise ValueError("too many bulk addresses")
    return out


def bulk_client_name(addr):
    _, _, b, c = addr.split(".")
    return "h%s-%s.clients.example" % (b, c)


def run_clients(pf, addrs, client, deadline_s):
    """Runs client(i, addr) for every address, each in its own thread,
    released together (connects spread 2 ms apart), while Postfix pf's
    established connections are sampled every 20 ms. Fails when a client
    still runs after deadline_s. Returns peak = [confirmed max of backend
    connections open at once, samples, raw max of single walks]."""
    go, stop_poll = threading.Event(), threading.Event()
    peak = [0, 0, 0]

    def poll():
        while not stop_poll.is_set():
            raw, confirmed = pf.established_confirmed()
            peak[0] = max(peak[0], confirmed)
            peak[1] += 1
            peak[2] = max(peak[2], raw)
            stop_poll.wait(0.02)

    def run(i, addr):
        go.wait(10)
        time.sleep(i * 0.002)
        client(i, addr)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    threads = [threading.Thread(target=run, args=(i, a), daemon=True)
               for i, a in enumerate(addrs)]
    for t in threads:
        t.start()
    go.set()
    began = time.monotonic()
    end = began + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    stop_poll.set()
    poller.join(5)
    print("%d clients finished in %.1f s" % (len(addrs), time.monotonic() - began))
    hung = sum(1 for t in threads if t.is_alive())
    assert hung == 0, "%d clients still running after %s s" % (hung, deadline_s)
    return peak


# ------------------------------------------------------------------ helpers

def free_port():
    """A currently free TCP port on 127.0.0.1 (also free for UDP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 20000:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


def make_world_dir(path):
    """mkdir -p with mode 0755 so unprivileged daemons (sluice as nobody,
    virtual(8) as nobody, dnsmasq as nobody) can traverse it."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def _proc_net_tcp_entries():
    """(local_ip, local_port, remote_ip, remote_port, state) for IPv4."""
    out = []
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                p = line.split()
                if len(p) < 4:
                    continue
                lip, lport = p[1].split(":")
                rip, rport = p[2].split(":")
                out.append((_hexip(lip), int(lport, 16), _hexip(rip),
                            int(rport, 16), int(p[3], 16)))
    except OSError:
        pass
    return out


def _hexip(h):
    return socket.inet_ntoa(struct.pack("<I", int(h, 16)))


TCP_ESTABLISHED = 0x01
TCP_LISTEN = 0x0A


def established_set(port, ip="127.0.0.1"):
    """Server-side ESTABLISHED TCP connections on ip:port, as a set of
    (peer address, peer port); connections still in the listen backlog
    count too.

    Asked of the kernel with NETLINK_SOCK_DIAG and an in-kernel filter on
    the port (one system call), /proc/net/tcp only as the fallback. Neither
    is an atomic snapshot: the kernel walks its hash table while
    connections come and go, so under churn one walk can count a socket
    that closed during the walk next to one that opened later. Use
    established_confirmed() for "never more than N"."""
    try:
        return _diag_established(port, ip)
    except OSError:
        key = ("%08X:%04X" % (struct.unpack("<I", socket.inet_aton(ip))[0], port))
        rx = re.compile(r"^\s*\d+: %s ([0-9A-F]{8}):([0-9A-F]{4}) 01 " % key, re.M)
        try:
            with open("/proc/net/tcp") as f:
                return {(_hexip(a), int(p, 16)) for a, p in rx.findall(f.read())}
        except OSError:
            return set()


def established_count(port, ip="127.0.0.1"):
    return len(established_set(port, ip))


def established_confirmed(port, ip="127.0.0.1"):
    """(raw, confirmed): raw is the size of one walk (may over-count by a
    connection or two under churn); confirmed is the number of connections
    seen ESTABLISHED in two walks in a row. A TCP connection never returns
    to ESTABLISHED, so all of those were open together between the two
    walks: confirmed is a lower bound of the real number, never an
    over-count."""
    a = established_set(port, ip)
    b = established_set(port, ip)
    return max(len(a), len(b)), len(a & b)


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_INET_DIAG_REQ_BYTECODE = 1
_INET_DIAG_BC_S_GE, _INET_DIAG_BC_S_LE = 2, 3


def _diag_established(port, ip):
    # inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0,
                      1 << TCP_ESTABLISHED) + bytes(48)
    # bytecode: sport >= port && sport <= port (as ss(8) builds it); a
    # failed test jumps to len + 4, which means "reject".
    bc = (struct.pack("=BBH", _INET_DIAG_BC_S_GE, 8, 20) + struct.pack("=BBH", 0, 0, port)
          + struct.pack("=BBH", _INET_DIAG_BC_S_LE, 8, 12) + struct.pack("=BBH", 0, 0, port))
    attr = struct.pack("=HH", 4 + len(bc), _INET_DIAG_REQ_BYTECODE) + bc
    body = req + attr
    hdr = struct.pack("=IHHII", 16 + len(body), _SOCK_DIAG_BY_FAMILY,
                      0x1 | 0x300, 1, 0)  # NLM_F_REQUEST | NLM_F_DUMP
    want_ip = socket.inet_aton(ip)
    found = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                       _NETLINK_SOCK_DIAG) as s:
        s.settimeout(2)
        s.sendto(hdr + body, (0, 0))
        for _ in range(10000):
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                mlen, mtype = struct.unpack_from("=IH", data, off)
                if mlen < 16:
                    raise OSError("bad netlink message")
                if mtype == _NLMSG_DONE:
                    return found
                if mtype == _NLMSG_ERROR:
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    raise OSError(-err, "sock_diag: %s" % os.strerror(-err))
                if mtype == _SOCK_DIAG_BY_FAMILY:
                    state = data[off + 17]
                    sport = struct.unpack_from(">H", data, off + 20)[0]
                    src = data[off + 24:off + 28]
                    if state == TCP_ESTABLISHED and sport == port and src == want_ip:
                        dport = struct.unpack_from(">H", data, off + 22)[0]
                        dst = socket.inet_ntoa(data[off + 40:off + 44])
                        found.add((dst, dport))
                off += (mlen + 3) & ~3
    raise OSError("sock_diag: no end of dump")


def is_listening(port, ip="127.0.0.1"):
    return any(lport == port and lip in (ip, "0.0.0.0") and st == TCP_LISTEN
               for (lip, lport, _, _, st) in _proc_net_tcp_entries())


def wait_listening(port, timeout, ip="127.0.0.1", proc=None):
    """Wait until something listens on ip:port (without connecting to it).
    Returns True/False. Gives up early if proc (a Popen) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port, ip):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def log_ts(line):
    """Wall-clock seconds of a sluice log line (2026-11-27T03:42:21.497Z),
    or None."""
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z", line)
    if not m:
        return None
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000.0


def proc_stat(pid):
    """(state, ppid, pgrp) of pid from /proc/PID/stat, or None when gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2])


def live_processes(field, value):
    """Live (not zombie) pids whose proc_stat field (1: ppid, 2: process
    group) is value."""
    out = set()
    for n in os.listdir("/proc"):
        if n.isdigit():
            st = proc_stat(int(n))
            if st and st[field] == value and st[0] not in ("Z", "X"):
                out.add(int(n))
    return out


def wait_until(pred, timeout, interval=0.05):
    """Poll pred() until true or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def run(cmd, timeout=60, check=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (
            " ".join(cmd), r.returncode, r.stdout.decode(errors="replace")))
    return r


def make_cert(directory, cn=SLUICE_HOSTNAME):
    """Self-signed certificate + key (PEM) in directory; returns paths."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=DNS:" + cn], timeout=60)
    os.chmod(cert, 0o644)
    os.chmod(key, 0o600)
    return cert, key


def unverified_tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ------------------------------------------------------------------ Postfix

class Message:
    """One delivered message, read from a maildir file."""

    def __init__(self, user, path, raw):
        self.user = user
        self.path = path
        self.raw = raw
        i = raw.find(b"\n\n")
        self.header_bytes = raw if i < 0 else raw[:i + 1]
        self.body = b"" if i < 0 else raw[i + 2:]
        self.headers = []  # [(name, value)] with continuation lines joined
        for line in self.header_bytes.split(b"\n"):
            if not line:
                continue
            if line[:1] in (b" ", b"\t") and self.headers:
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + "\n" + line.decode("latin-1"))
            elif b":" in line:
                n, v = line.split(b":", 1)
                self.headers.append((n.decode("latin-1"),
                                     v.strip().decode("latin-1")))

    def get_all(self, name):
        return [v for (n, v) in self.headers if n.lower() == name.lower()]

    def get(self, name):
        v = self.get_all(name)
        return v[0] if v else None

    @property
    def subject(self):
        return self.get("Subject") or ""

    def __repr__(self):
        return "<Message %s %s %r>" % (self.user, os.path.basename(self.path),
                                       self.subject)


def postfix_main_cf(d, port, xclient_hosts="127.0.0.1",
                    bare_newline="reject", users=USERS, extra=None):
    """The main.cf text of a private backend instance rooted at d."""
    vmaps = ", ".join("%s@%s=%s/" % (u, DOMAIN, u) for u in users)
    p = [
        ("compatibility_level", "3.6"),
        ("queue_directory", d + "/queue"),
        ("data_directory", d + "/data"),
        ("mail_owner", "postfix"),
        ("setgid_group", "postdrop"),
        ("maillog_file", d + "/maillog"),
        ("maillog_file_prefixes", d),
        ("myhostname", POSTFIX_HOSTNAME),
        ("mydomain", "test"),
        ("myorigin", "$myhostname"),
        ("inet_interfaces", "127.0.0.1"),
        ("inet_protocols", "ipv4"),
        ("mynetworks", "127.0.0.1/32"),
        ("mydestination", ""),
        ("relay_domains", ""),
        ("local_recipient_maps", ""),
        ("alias_maps", ""),
        ("alias_database", ""),
        ("local_transport", "error:5.1.1 local delivery is disabled"),
        ("default_transport", "error:5.7.1 no outbound mail from the test backend"),
        ("relay_transport", "error:5.7.1 no outbound mail from the test backend"),
        ("notify_classes", ""),
        ("biff", "no"),
        ("smtpd_banner", "$myhostname ESMTP Postfix"),
        # Never ask the system resolver about anyone.
        ("smtpd_peername_lookup", "no"),
        ("smtp_dns_support_level", "disabled"),
        ("virtual_mailbox_domains", DOMAIN),
        ("virtual_mailbox_base", d + "/mail"),
        ("virtual_mailbox_maps", "inline:{ %s }" % vmaps),
        ("virtual_uid_maps", "static:%d" % VMAIL_UID),
        ("virtual_gid_maps", "static:%d" % VMAIL_GID),
        ("virtual_transport", "virtual"),
        ("smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination"),
        ("smtpd_authorized_xclient_hosts", xclient_hosts),
        ("smtpd_forbid_unauth_pipelining", "yes"),
        ("smtpd_forbid_bare_newline", bare_newline),
        ("smtpd_forbid_bare_newline_exclusions", ""),
        # Per-client anvil limits off: every test client is on loopback.
        ("smtpd_client_connection_count_limit", "0"),
        ("smtpd_client_connection_rate_limit", "0"),
        ("smtpd_client_message_rate_limit", "0"),
        ("smtpd_client_recipient_rate_limit", "0"),
        ("smtpd_client_event_limit_exceptions", "127.0.0.0/8"),
        ("default_process_limit", "100"),
        # No 1 s pauses at MAIL when arrivals outrun deliveries (bulk tests).
        ("in_flow_delay", "0s"),
        ("queue_run_delay", "1s"),
        ("minimal_backoff_time", "1s"),
        ("maximal_backoff_time", "2s"),
    ]
    if extra:
        keys = dict(p)
        keys.update(extra)
        p = list(keys.items())
    return "".join("%s = %s\n" % kv for kv in p)


def postfix_master_cf(port, extra_rows=()):
    """master.cf text; extra_rows (tuples of the 8 columns) are appended,
    e.g. ("smtp", "unix", "-", "-", "n", "-", "-", "smtp") for an
    instance that sends mail out."""
    rows = [
        ("127.0.0.1:%d" % port, "inet", "n", "-", "n", "-", "-", "smtpd"),
        ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
        ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
        ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
        ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
        ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
        ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
        ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
        ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
        ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
        ("error", "unix", "-", "-", "n", "-", "-", "error"),
        ("retry", "unix", "-", "-", "n", "-", "-", "error"),
        ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
        ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
        ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
        ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
        ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
    ] + [tuple(r) for r in extra_rows]
    return "".join("%-12s %-10s %-3s %-3s %-3s %-6s %-3s %s\n" % r
                   for r in rows)


# master.cf rows and main.cf settings of a Postfix instance that sends
# mail out: everything relayed to [host]:port from bind_address.
SENDER_MASTER = (
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
)


def sender_extra(host, port, bind_address):
    return {
        "myhostname": "sender.test",
        "virtual_mailbox_domains": "",
        "virtual_mailbox_maps": "",
        "default_transport": "smtp",
        "relay_transport": "relay",
        "relayhost": "[%s]:%d" % (host, port),
        "smtp_bind_address": bind_address,
    }


class Postfix:
    """A private Postfix backend rooted at directory d, smtpd on
    127.0.0.1:port. Call write_config() then start(); stop() always."""

    def __init__(self, d, port=None, xclient_hosts="127.0.0.1",
                 bare_newline="reject", users=USERS, extra=None,
                 master_extra=()):
        self.dir = os.path.abspath(d)
        self.port = port or free_port()
        self.xclient_hosts = xclient_hosts
        self.bare_newline = bare_newline
        self.users = tuple(users)
        self.extra = extra or {}
        self.master_extra = tuple(master_extra or ())
        self.config_dir = os.path.join(self.dir, "etc")
        self.maillog_path = os.path.join(self.dir, "maillog")
        self.maildir_base = os.path.join(self.dir, "mail")
        self._started = False

    # configuration ---------------------------------------------------
    def write_config(self):
        sock = os.path.join(self.dir, "queue/public/postlog")
        if len(sock) > 100:
            raise ValueError("Postfix directory too deep for unix sockets "
                             "(sun_path): %s" % sock)
        make_world_dir(self.dir)
        for sub in ("etc", "queue", "data"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        os.chmod(self.config_dir, 0o755)
        os.chmod(os.path.join(self.dir, "queue"), 0o755)
        pw_uid, pw_gid = _postfix_ids()
        os.chown(os.path.join(self.dir, "data"), pw_uid, pw_gid)
        os.makedirs(self.maildir_base, exist_ok=True)
        os.chown(self.maildir_base, VMAIL_UID, VMAIL_GID)
        os.chmod(self.maildir_base, 0o755)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write(postfix_main_cf(self.dir, self.port, self.xclient_hosts,
                                    self.bare_newline, self.users,
                                    self.extra))
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(postfix_master_cf(self.port, self.master_extra))
        if not os.path.exists(self.maillog_path):
            open(self.maillog_path, "a").close()
        return self

    # life cycle --------------------------------------------------------
    def master_pid(self):
        try:
            with open(os.path.join(self.dir, "queue/pid/master.pid")) as f:
                pid = int(f.read().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def running(self):
        return self.master_pid() is not None

    def start(self, timeout=30):
        if self._started:
            # The integrity checks ran at the first start: skip them now.
            open(os.path.join(self.dir, "queue/quick-start"), "w").close()
        r = run(["postfix", "-c", self.config_dir, "start"], timeout=timeout,
                check=False)
        self._started = True
        if r.returncode != 0:
            raise RuntimeError("postfix start failed (%d):\n%s\n--- maillog:\n%s"
                               % (r.returncode, r.stdout.decode(errors="replace"),
                                  self.maillog()[-3000:]))
        if not wait_listening(self.port, timeout):
            raise RuntimeError("postfix on port %d not listening; maillog:\n%s"
                               % (self.port, self.maillog()[-3000:]))
        self.wait_accepting(timeout)
        return self

    def wait_accepting(self, timeout=15):
        """Connect, read the 220 greeting, QUIT: proves smtpd answers."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with SmtpRaw("127.0.0.1", self.port, timeout=5) as c:
                    code, _ = c.read_reply()
                    if code == 220:
                        c.cmd("QUIT")
                        return True
                    last = "greeting %r" % code
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError("postfix on %d did not greet: %s" % (self.port, last))

    def stop(self, timeout=15):
        """Stop the instance (its smtpd processes die with the master).
        Safe to call when not running. Falls back to SIGKILL of the group."""
        pid = self.master_pid()
        if pid is None:
            return
        try:
            run(["postfix", "-c", self.config_dir, "stop"], timeout=timeout,
                check=False)
        except subprocess.TimeoutExpired:
            pass
        if not wait_until(lambda: self.master_pid() is None, 5):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            wait_until(lambda: self.master_pid() is None, 5)
        # children may take a moment to exit and close their sockets
        wait_until(lambda: established_count(self.port) == 0
                   and not is_listening(self.port), 5)

    def restart(self):
        self.stop()
        return self.start()

    # observation -------------------------------------------------------
    def maillog(self):
        try:
            with open(self.maillog_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10):
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.maillog()), timeout)

    def established(self):
        return established_count(self.port)

    def established_confirmed(self):
        return established_confirmed(self.port)

    def messages(self, user=None):
        """Delivered messages (all users, or one), sorted by file name."""
        out = []
        users = [user] if user else self.users
        for u in users:
            for sub in ("new", "cur"):
                p = os.path.join(self.maildir_base, u, sub)
                try:
                    names = sorted(os.listdir(p))
                except OSError:
                    continue
                for n in names:
                    fp = os.path.join(p, n)
                    try:
                        with open(fp, "rb") as f:
                            out.append(Message(u, fp, f.read()))
                    except OSError:
                        pass
        return out

    def wait_messages(self, n, timeout=20, pred=None):
        """Wait until at least n delivered messages (matching pred)."""
        def got():
            m = [x for x in self.messages() if pred is None or pred(x)]
            return m if len(m) >= n else None
        r = wait_until(got, timeout, 0.1)
        return r or [x for x in self.messages() if pred is None or pred(x)]

    def queue_ids_pending(self):
        r = run(["postqueue", "-c", self.config_dir, "-j"], check=False, timeout=20)
        return [l for l in r.stdout.decode(errors="replace").splitlines() if l]

    def __repr__(self):
        return "<Postfix %s :%d xclient=%s>" % (self.dir, self.port,
                                                 self.xclient_hosts)


def _postfix_ids():
    import pwd
    pw = pwd.getpwnam("postfix")
    return pw.pw_uid, pw.pw_gid


# POSTFIX_LOG_FORBIDDEN: lines that must never appear in the backend's log
# unless a test provokes them on purpose (docs/hostile.md goal G7).
POSTFIX_LOG_FORBIDDEN = (
    "improper command pipelining",
    "SMTP protocol synchronization",
    "bare <LF> received",
    "insufficient authorization",
    "Bad NAME syntax",
)


def forbidden_log_lines(text, allow=()):
    out = []
    for line in text.splitlines():
        for pat in POSTFIX_LOG_FORBIDDEN:
            if pat in line and pat not in allow:
                out.append(line)
    return out


# ------------------------------------------------------------------ dnsmasq

class Dnsmasq:
    """Authoritative-only dnsmasq on 127.0.0.1:port for the test zones."""

    ZONES = ("example", "test", "127.in-addr.arpa", "bl.test", "wl.test")

    def __init__(self, d, port=None, n_bulk=600, daemon=False, zones=None,
                 extra=()):
        self.dir = os.path.abspath(d)
        self.port = port or free_port()
        # Without a zone in local=, dnsmasq (no upstream) answers REFUSED
        # for names in it that its hosts file does not hold.
        self.zones = tuple(zones) if zones is not None else self.ZONES
        self.extra = tuple(extra)  # more dnsmasq.conf lines
        self.n_bulk = n_bulk
        self.daemon = daemon  # demo: detach with a pid file
        self.proc = None
        self.conf = os.path.join(self.dir, "dnsmasq.conf")
        self.hosts = os.path.join(self.dir, "dnsmasq.hosts")
        self.log_path = os.path.join(self.dir, "dnsmasq.log")
        self.pid_file = os.path.join(self.dir, "dnsmasq.pid")

    def write_config(self):
        make_world_dir(self.dir)
        # hosts-file lines give both the PTR and the A record (FCrDNS).
        hosts = ["%s %s" % (CLIENT23, CLIENT23_NAME),
                 "127.0.0.24 client24.example"]
        for a in bulk_client_addrs(self.n_bulk):
            hosts.append("%s %s" % (a, bulk_client_name(a)))
        with open(self.hosts, "w") as f:
            f.write("\n".join(hosts) + "\n")
        os.chmod(self.hosts, 0o644)
        lines = [
            "port=%d" % self.port,
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-poll",
            "no-hosts",
            "addn-hosts=%s" % self.hosts,
            "no-negcache",
            "log-queries",
            "log-facility=%s" % self.log_path,
            "user=nobody",
        ]
        lines += ["local=/%s/" % z for z in self.zones]
        lines += [
            # PTR that is not forward-confirmed: 127.0.0.25 -> liar.example
            # (liar.example has no A record).
            "ptr-record=25.0.0.127.in-addr.arpa,liar.example",
            # DNSBL test points (RFC 5782) and one listed test client.
            "host-record=2.0.0.127.bl.test,127.0.0.2",
            "txt-record=2.0.0.127.bl.test,\"listed for testing\"",
            "host-record=%s.bl.test,127.0.0.2" % _rev(BLOCKLISTED),
            "txt-record=%s.bl.test,\"listed for testing\"" % _rev(BLOCKLISTED),
            "host-record=%s.bl.test,127.0.0.2" % _rev(BLOCKLISTED2),
            "host-record=2.0.0.127.wl.test,127.0.0.2",
            "host-record=%s.wl.test,127.0.0.2" % _rev(ALLOWLISTED),
            "host-record=%s,%s" % (SLUICE_HOSTNAME, "127.0.0.1"),
        ]
        lines += list(self.extra)
        # Always a private pid file: the default /var/run/dnsmasq.pid is
        # shared, and two instances starting at once (pytest -n) collide.
        lines.append("pid-file=%s" % self.pid_file)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        if not os.path.exists(self.log_path):
            open(self.log_path, "a").close()
        os.chmod(self.log_path, 0o666)
        return self

    def start(self, timeout=15):
        cmd = ["/usr/sbin/dnsmasq", "--conf-file=%s" % self.conf]
        if self.daemon:
            run(cmd, timeout=timeout)
        else:
            self.proc = subprocess.Popen(
                cmd + ["--keep-in-foreground"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(self.dir, "dnsmasq.stderr"), "wb"),
                start_new_session=True)
        ok = wait_until(lambda: self._answers(), timeout, 0.1)
        if not ok:
            err = ""
            try:
                with open(os.path.join(self.dir, "dnsmasq.stderr")) as f:
                    err = f.read()
            except OSError:
                pass
            self.stop()
            raise RuntimeError("dnsmasq on %d did not answer: %s" % (self.port, err))
        return self

    def _answers(self):
        if self.proc is not None and self.proc.poll() is not None:
            return False
        try:
            rc, _ = dns_query("127.0.0.1", self.port, CLIENT23_NAME, "A",
                              timeout=0.5)
            return rc == 0
        except OSError:
            return False

    def daemon_pid(self):
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout=10):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        elif self.daemon:
            pid = self.daemon_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)

    def query(self, name, qtype="A", timeout=2):
        return dns_query("127.0.0.1", self.port, name, qtype, timeout)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def _rev(addr):
    return ".".join(reversed(addr.split(".")))


# ----------------------------------------------------------- raw DNS client

_QTYPES = {"A": 1, "PTR": 12, "TXT": 16, "AAAA": 28, "MX": 15}


def dns_query(server, port, name, qtype="A", timeout=2.0):
    """One UDP query; returns (rcode, [answer data as str]) for the answer
    section records of the asked type. No system resolver involved."""
    qt = _QTYPES[qtype]
    if qtype == "PTR" and not name.endswith(".arpa"):
        name = _rev(name) + ".in-addr.arpa"
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qt, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (server, port))
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data, _ = s.recvfrom(4096)
            if struct.unpack(">H", data[:2])[0] == qid:
                break
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    rcode = flags & 0xF
    off = 12
    for _ in range(qd):
        _, off = _dns_name(data, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _dns_name(data, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        rdata = data[off:off + rdlen]
        if rtype == qt:
            if rtype == 1:
                answers.append(socket.inet_ntoa(rdata))
            elif rtype in (12,):
                answers.append(_dns_name(data, off)[0])
            elif rtype == 16:
                txt, i = [], 0
                while i < len(rdata):
                    ln = rdata[i]
                    txt.append(rdata[i + 1:i + 1 + ln].decode(errors="replace"))
                    i += 1 + ln
                answers.append("".join(txt))
            else:
                answers.append(rdata.hex())
        off += rdlen
    return rcode, answers


def _dns_name(data, off):
    labels, jumped, end = [], False, off
    for _ in range(128):
        ln = data[off]
        if ln == 0:
            off += 1
            break
        if ln & 0xC0 == 0xC0:
            ptr = ((ln & 0x3F) << 8) | data[off + 1]
            if not jumped:
                end = off + 2
            jumped = True
            off = ptr
            continue
        labels.append(data[off + 1:off + 1 + ln].decode(errors="replace"))
        off += 1 + ln
    return ".".join(labels), (end if jumped else off)


# ------------------------------------------------------------------- sluice

def sluice_bin():
    b = os.environ.get("SLUICE_BIN")
    if b:
        return os.path.abspath(b)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    return os.path.join(repo, "sluice")


class Sluice:
    """sluice under test: -f -c FILE [-o name=value ...], own process group,
    stderr captured to DIR/sluice.log."""

    def __init__(self, d, settings, overrides=(), binary=None):
        self.dir = os.path.abspath(d)
        self.settings = dict(settings)
        self.overrides = list(overrides)
        self.binary = binary or sluice_bin()
        self.conf = os.path.join(self.dir, "sluice.conf")
        self.log_path = os.path.join(self.dir, "sluice.log")
        self.proc = None
        m = re.match(r"^(\S+):(\d+)$", self.settings.get("listen", ""))
        self.host, self.port = (m.group(1), int(m.group(2))) if m else (None, None)

    def write_config(self):
        make_world_dir(self.dir)
        with open(self.conf, "w") as f:
            f.write("# written by tests/scenario/harness.py\n")
            for k, v in self.settings.items():
                f.write("%s = %s\n" % (k, v))
        os.chmod(self.conf, 0o644)
        return self

    def command(self):
        cmd = [self.binary, "-f", "-c", self.conf]
        if os.environ.get("SLUICE_VERBOSE"):  # debug lines, for a failing test
            cmd.insert(2, "-v")
        for o in self.overrides:
            cmd += ["-o", o]
        return cmd

    def start(self, timeout=15):
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError(
                "sluice binary %s is missing or not executable (build it "
                "with `make sluice` or set SLUICE_BIN)" % self.binary)
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf,
                                     start_new_session=True, cwd=self.dir)
        if not wait_listening(self.port, timeout, self.host, self.proc):
            rc = self.proc.poll()
            self.stop()
            raise RuntimeError("sluice did not listen on %s:%d (exit %r); log:\n%s"
                               % (self.host, self.port, rc, self.log()[-4000:]))
        return self

    def stop(self, timeout=10):
        p = self.proc
        if p is None:
            return None
        rc = p.poll()
        if rc is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                rc = None
        # the supervisor may be gone while a worker lingers: kill the group
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        if rc is None:
            try:
                rc = p.wait(5)
            except subprocess.TimeoutExpired:
                rc = None
        self.proc = None
        try:
            self._logf.close()
        except Exception:
            pass
        self.exit_code = rc
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    LOG_SETTLE_S = 0.05   # the log has not grown for this long ...
    LOG_SETTLE_MAX_S = 0.5  # ... or this long has passed

    def log(self):
        """The log as written so far, once it has settled. sluice writes
        its lines from a thread of its own a moment after the event (the
        log queue's gather pause; longer under the sanitizer on a busy
        machine), so a line due for what a test has just seen may not be
        in the file yet: wait until the file has not grown for
        LOG_SETTLE_S, at most LOG_SETTLE_MAX_S (a log that keeps growing
        under load is read as it is then)."""
        t0 = time.monotonic()
        size, quiet_since = -1, t0
        while True:
            try:
                now_size = os.stat(self.log_path).st_size
            except OSError:
                return ""
            now = time.monotonic()
            if now_size != size:
                size, quiet_since = now_size, now
            elif now - quiet_since >= self.LOG_SETTLE_S or now - t0 >= self.LOG_SETTLE_MAX_S:
                break
            time.sleep(0.01)
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def metric(self, name):
        """The value of one line of GET /metrics on metrics_listen, by its
        full name with labels, e.g. 'sluice_x_total{reason="y"}'."""
        host, port = self.settings["metrics_listen"].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError("no metric %s on /metrics" % name)

    def check_config(self, path=None, timeout=20):
        """sluice -n -c FILE: (exit code, stdout+stderr)."""
        r = subprocess.run([self.binary, "-n", "-c", path or self.conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")


# --------------------------------------------------------- raw SMTP client

class SmtpError(Exception):
    pass


class SmtpRaw:
    """Byte-level SMTP client. read_reply() returns (code, [text lines]) of
    one possibly multi-line reply; raw bytes of every reply are kept in
    self.transcript. Every read has a timeout."""

    def __init__(self, host, port, source="127.0.0.1", timeout=10):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.transcript = []
        self.tls = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for a reply; have %r"
                                 % self.buf[-300:])
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            raise SmtpError("connection closed; unparsed %r" % self.buf)
        self.buf += data

    def read_line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def read_reply(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        lines, raw = [], b""
        for _ in range(1000):
            while b"\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\n", 1)
            raw += line + b"\n"
            s = line.rstrip(b"\r").decode("utf-8", errors="replace")
            if len(s) < 3 or not s[:3].isdigit():
                raise SmtpError("malformed reply line %r" % s)
            lines.append(s[4:])
            if len(s) == 3 or s[3] == " ":
                self.transcript.append(raw)
                return int(s[:3]), lines
            if s[3] != "-":
                raise SmtpError("malformed reply line %r" % s)
        raise SmtpError("reply with more than 1000 lines")

    def read_replies(self, n, timeout=None):
        return [self.read_reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        self.send(line.encode() + b"\r\n" if isinstance(line, str)
                  else line + b"\r\n")
        return self.read_reply(timeout)

    def expect(self, line, code, timeout=None):
        """Send line, require reply class/code; code may be 2 (any 2xx)."""
        c, text = self.cmd(line, timeout)
        ok = (c // 100 == code) if code < 10 else (c == code)
        if not ok:
            raise SmtpError("%r -> %d %s (expected %s)" % (line, c, " / ".join(text), code))
        return c, text

    def pending(self, wait=0.3):
        """Bytes that arrive within wait seconds without sending anything."""
        deadline = time.monotonic() + wait
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.sock.settimeout(remaining)
                d = self.sock.recv(65536)
                if not d:
                    break
                self.buf += d
        except (socket.timeout, ssl.SSLError, BlockingIOError):
            pass
        return self.buf

    def starttls(self, context=None, server_hostname=None):
        """Wrap the socket in TLS. Refuses if unread plaintext is buffered
        (that would be injected data the server sent before the handshake)."""
        if self.buf:
            raise SmtpError("plaintext bytes after the STARTTLS reply: %r"
                            % self.buf)
        ctx = context or unverified_tls_context()
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True

    def ehlo(self, name):
        code, lines = self.cmd("EHLO " + name)
        if code != 250:
            raise SmtpError("EHLO -> %d %s" % (code, lines))
        return [l.upper() for l in lines[1:]]

    def send_message(self, mail_from, rcpts, data_dotstuffed, params=""):
        """MAIL, RCPT..., DATA, body, '.' one at a time. data must already
        be dot-stuffed and end with CRLF. Returns (rcpt replies, final)."""
        self.expect("MAIL FROM:<%s>%s" % (mail_from, params), 250)
        rr = [self.cmd("RCPT TO:<%s>" % r) for r in rcpts]
        if not any(c // 100 == 2 for c, _ in rr):
            return rr, None
        self.expect("DATA", 354)
        self.send(data_dotstuffed + b".\r\n")
        return rr, self.read_reply()


def dot_stuff(msg):
    """Message bytes (CRLF lines) -> DATA payload, CRLF-terminated."""
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    out = []
    for line in msg.split(b"\r\n")[:-1]:
        out.append((b"." + line) if line.startswith(b".") else line)
    return b"\r\n".join(out) + b"\r\n"


def crlf_to_lf(b):
    return b.replace(b"\r\n", b"\n")


# ---------------------------------------------------------- demo set-up

DEMO_POSTFIX_PORT = 10025
DEMO_LISTEN = "127.0.0.1:2525"


def demo_setup(d):
    d = os.path.abspath(d)
    make_world_dir(d)
    dns_port = int(os.environ.get("DEMO_DNS_PORT", "5353"))
    pf = Postfix(os.path.join(d, "postfix"), port=DEMO_POSTFIX_PORT)
    if pf.running():
        print("run-demo: reusing the Postfix already running in %s" % pf.dir,
              file=sys.stderr)
    else:
        if is_listening(DEMO_POSTFIX_PORT):
            sys.exit("run-demo: 127.0.0.1:%d is taken by something else"
                     % DEMO_POSTFIX_PORT)
        pf.write_config()
        pf.start()
    dns = Dnsmasq(os.path.join(d, "dns"), port=dns_port, n_bulk=0, daemon=True)
    if dns.daemon_pid():
        print("run-demo: reusing dnsmasq on 127.0.0.1:%d" % dns_port,
              file=sys.stderr)
    else:
        dns.write_config()
        dns.start()
    settings = {
        "listen": DEMO_LISTEN,
        "backend": "127.0.0.1:%d" % DEMO_POSTFIX_PORT,
        "backend_pool_size": "4",
        "backend_xclient": "yes",
        "myhostname": SLUICE_HOSTNAME,
        "dns_servers": "127.0.0.1:%d" % dns_port,
        "spool_dir": os.path.join(d, "spool"),
        "state_dir": os.path.join(d, "state"),
        "workers": "1",
        "user": "nobody",
    }
    s = Sluice(d, settings)
    s.write_config()
    print(s.conf)


def main(argv):
    if len(argv) == 3 and argv[1] == "demo-setup":
        try:
            demo_setup(argv[2])
        except (RuntimeError, OSError) as e:
            print("run-demo: %s" % e, file=sys.stderr)
            print("run-demo: (another DNS port: DEMO_DNS_PORT=N make run)",
                  file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
