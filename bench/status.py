#!/usr/bin/python3
"""What the status snapshot costs: sluice (one worker) holds N idle client
sessions; the bench reads GET /status.json and `sluicectl sessions --json`
repeatedly and prints their latency and size, and the worker's CPU time
over a quiet interval (that is the snapshot walk twice a second, plus
the sessions' own timers).

    bench/status.py [sessions ...]       (default: 0 1000 4000)

Environment: SLUICE (./sluice), SLUICECTL (./sluicectl), REQUESTS (20),
QUIET_S (10). No mail server is needed (sessions stay before MAIL, the
pool retries in the background). Clients connect from 127.0.1.x..127.0.9.x
(client_connection_limit is per address). Root, Debian 12.
Output: one key=value line per session count.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "scenario"))
import harness  # noqa: E402

SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, "sluice"))
SLUICECTL = os.environ.get("SLUICECTL", os.path.join(ROOT, "sluicectl"))
REQUESTS = int(os.environ.get("REQUESTS", "20"))
QUIET_S = float(os.environ.get("QUIET_S", "10"))
PER_ADDR = 40
CONNECT_TIMEOUT_S = 60


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(sup):
    out = subprocess.run(["pgrep", "-P", str(sup)], stdout=subprocess.PIPE, text=True).stdout
    pids = [int(p) for p in out.split()]
    return pids[0] if pids else None


def timed(fn):
    t = time.monotonic()
    n = fn()
    return (time.monotonic() - t) * 1000, n


def run(n, d):
    port, mport = harness.free_port(), harness.free_port()
    sl = harness.Sluice(os.path.join(d, "sluice-%d" % n), {
        "listen": "127.0.0.1:%d" % port, "backend": "127.0.0.1:%d" % harness.free_port(),
        "metrics_listen": "127.0.0.1:%d" % mport, "workers": "1", "user": "nobody",
        "greet_wait": "0s", "smtpd_timeout": "300s", "dns_servers": "127.0.0.1:1",
        "dns_timeout": "1s", "session_limit": str(max(n * 2, 100)),
        "client_connection_limit": str(PER_ADDR),
        "state_dir": os.path.join(d, "state-%d" % n),
        "spool_dir": os.path.join(d, "spool-%d" % n)}, binary=SLUICE)
    sl.write_config().start()
    socks = []
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        for i in range(n):
            if time.monotonic() > deadline:
                break
            s = socket.socket()
            k = i // PER_ADDR
            s.bind(("127.0.%d.%d" % (1 + k // 250, 1 + k % 250), 0))
            s.connect(("127.0.0.1", port))
            socks.append(s)
        url = "http://127.0.0.1:%d/status.json" % mport
        ok = harness.wait_until(lambda: b'"open":%d,' % len(socks) in
                                urllib.request.urlopen(url, timeout=10).read(), 30, 0.5)
        http_ms, sizes = [], []
        for _ in range(REQUESTS):
            ms, body = timed(lambda: urllib.request.urlopen(url, timeout=10).read())
            http_ms.append(ms)
            sizes.append(len(body))
        ctl_ms, ctl_size = [], 0
        for _ in range(REQUESTS):
            ms, out = timed(lambda: subprocess.run(
                [SLUICECTL, "-c", sl.conf, "--json", "sessions"], stdout=subprocess.PIPE,
                check=True).stdout)
            ctl_ms.append(ms)
            ctl_size = len(out)
        w = worker_pid(sl.proc.pid)
        c0 = cpu_s(w)
        time.sleep(QUIET_S)
        c1 = cpu_s(w)
        print("sessions=%d seen=%s status_json_ms_p50=%.1f status_json_ms_max=%.1f "
              "status_json_bytes=%d sluicectl_sessions_ms_p50=%.1f sluicectl_sessions_bytes=%d "
              "worker_cpu_pct_idle=%.2f" % (
                  len(socks), ok, statistics.median(http_ms), max(http_ms),
                  statistics.median(sizes), statistics.median(ctl_ms), ctl_size,
                  100.0 * (c1 - c0) / QUIET_S), flush=True)
    finally:
        for s in socks:
            s.close()
        sl.stop()


def main():
    counts = [int(a) for a in sys.argv[1:]] or [0, 1000, 4000]
    d = tempfile.mkdtemp(prefix="sluice-bench-status-", dir="/tmp")
    os.chmod(d, 0o755)
    for n in counts:
        run(n, d)


if __name__ == "__main__":
    main()
