#!/usr/bin/python3
"""What an in-place upgrade costs the clients: sluice (two workers) started
from a copy of the binary holds N idle sessions; a client connects in a
loop and times its greeting; the file is replaced as dpkg does (rename)
and `sluicectl upgrade` is run UPGRADES times. Printed: how long sluicectl
upgrade takes to answer (the new workers accept), the greeting latency
before and during the upgrades, connections that failed, and how many of
the idle sessions still answer NOOP afterwards (their old workers serve
them to the end).

    bench/upgrade.py [sessions ...]      (default: 0 1000)

Environment: SLUICE (./sluice), SLUICECTL (./sluicectl), UPGRADES (20).
No mail server is needed (sessions stay before MAIL); a private dnsmasq
(tests/scenario/harness.py) answers the reverse look-ups, so a greeting
waits for no DNS timeout. Clients connect from 127.0.1.x
(client_connection_limit is per address), the timed one from 127.0.0.23.
Root, Debian 12.
Output: one key=value line per session count.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# The programs under test (SLUICE, SLUICECTL) and the scenario harness, as
# the status bench finds them.
from status import SLUICE, SLUICECTL, harness

UPGRADES = int(os.environ.get("UPGRADES", "20"))
PER_ADDR = 40
GREETER_MAX = 100000


def install(path):
    shutil.copyfile(SLUICE, path + ".new")
    os.chmod(path + ".new", 0o755)
    os.rename(path + ".new", path)


class Greeter(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.phase = port, threading.Event(), "before"
        self.ms = {"before": [], "during": []}
        self.failed = 0

    def run(self):
        for _ in range(GREETER_MAX):
            if self.stop.is_set():
                return
            t = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), 10,
                                              source_address=(harness.CLIENT23, 0)) as s:
                    s.settimeout(10)
                    if not s.recv(256).startswith(b"220"):
                        raise OSError("no 220")
                    self.ms[self.phase].append((time.monotonic() - t) * 1000)
                    s.sendall(b"QUIT\r\n")
            except OSError:
                self.failed += 1
            time.sleep(0.01)


def run(n, d, dns):
    port = harness.free_port()
    exe = os.path.join(d, "bin-%d" % n, "sluice")
    os.makedirs(os.path.dirname(exe))
    os.chmod(os.path.dirname(exe), 0o755)
    install(exe)
    sl = harness.Sluice(os.path.join(d, "sluice-%d" % n), {
        "listen": "127.0.0.1:%d" % port, "backend": "127.0.0.1:%d" % harness.free_port(),
        "workers": "2", "user": "nobody", "greet_wait": "0s", "smtpd_timeout": "300s",
        "dns_servers": "127.0.0.1:%d" % dns.port, "dns_timeout": "1s",
        "session_limit": str(max(n * 2, 100)), "client_connection_limit": str(PER_ADDR),
        "state_dir": os.path.join(d, "state-%d" % n),
        "spool_dir": os.path.join(d, "spool-%d" % n)}, binary=exe)
    sl.write_config().start()
    socks, g = [], Greeter(port)
    try:
        for i in range(n):
            s = socket.socket()
            k = i // PER_ADDR
            s.bind(("127.0.1.%d" % (1 + k % 250), 0))
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        for s in socks:
            s.recv(256)
        g.start()
        time.sleep(2)
        g.phase = "during"
        took = []
        for _ in range(UPGRADES):
            install(exe)
            t = time.monotonic()
            r = subprocess.run([SLUICECTL, "-c", sl.conf, "upgrade"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=120)
            took.append((time.monotonic() - t) * 1000)
            if r.returncode != 0:
                print("upgrade failed: %s" % r.stdout.decode(errors="replace"), flush=True)
                break
        g.stop.set()
        g.join(15)
        alive = 0
        for s in socks:
            try:
                s.sendall(b"NOOP\r\n")
                alive += s.recv(256).startswith(b"250")
            except OSError:
                pass
        q = lambda v, f: f(v) if v else float("nan")  # noqa: E731
        print("sessions=%d upgrades=%d upgrade_ms_p50=%.0f upgrade_ms_max=%.0f "
              "greet_ms_p50_before=%.1f greet_ms_max_before=%.1f greet_ms_p50_during=%.1f "
              "greet_ms_max_during=%.1f greetings_during=%d connects_failed=%d "
              "sessions_answering_after=%d same_pid=%s" % (
                  n, len(took), q(took, statistics.median), q(took, max),
                  q(g.ms["before"], statistics.median), q(g.ms["before"], max),
                  q(g.ms["during"], statistics.median), q(g.ms["during"], max),
                  len(g.ms["during"]), g.failed, alive, sl.alive()), flush=True)
    finally:
        g.stop.set()
        for s in socks:
            s.close()
        sl.stop()


def main():
    counts = [int(a) for a in sys.argv[1:]] or [0, 1000]
    d = tempfile.mkdtemp(prefix="sluice-bench-upgrade-", dir="/tmp")
    os.chmod(d, 0o755)
    dns = harness.Dnsmasq(os.path.join(d, "dns"))
    dns.write_config()
    dns.start()
    try:
        for n in counts:
            run(n, d, dns)
    finally:
        dns.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
