"""
Logging never blocks the loop (issue 10 item 8): sluice's log goes to a
pipe that nobody reads (as a stalled journal or syslog would), with debug
logging on so every session writes dozens of lines. Sessions must still
complete, the lost lines must be counted in sluice_log_dropped_total, and
once the pipe is read again the lines that come out are whole and include
the report of how many were dropped.

Every wait is bounded in time, every loop in count and time.
"""

import fcntl
import os
import re
import subprocess
import time
import uuid

import pytest

import harness
from harness import SmtpRaw, dot_stuff

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MAX_SESSIONS = 600


class PipeSluice(harness.Sluice):
    """sluice -f -v with stdout and stderr on a 4 KiB pipe we do not read."""

    def start(self, timeout=15):
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
        self.read_fd = r
        self._logf = open(os.devnull, "wb")
        self.proc = subprocess.Popen(self.command() + ["-v"], stdin=subprocess.DEVNULL,
                                     stdout=w, stderr=w, start_new_session=True,
                                     cwd=self.dir)
        os.close(w)
        if not harness.wait_listening(self.port, timeout, self.host, self.proc):
            self.stop()
            raise RuntimeError("sluice did not listen")
        return self

    def read_available(self, limit=4 * 1024 * 1024):
        os.set_blocking(self.read_fd, False)
        out = b""
        for _ in range(10000):
            try:
                d = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not d or len(out) > limit:
                break
            out += d
        return out




@pytest.mark.deadline(90)
def test_logging_01_stalled_log_pipe_sessions_complete_drops_counted(
        postfix, sluice_settings, workdir):
    pf = postfix()
    mport = harness.free_port()
    sl = PipeSluice(os.path.join(workdir, "sluice"),
                    sluice_settings(pf, metrics_listen="127.0.0.1:%d" % mport))
    sl.write_config()
    sl.start()
    try:
        # Sessions until lines are being dropped, then ten more: those
        # run entirely while the log is stalled.
        toks = []
        after_drop = None
        for i in range(MAX_SESSIONS):
            tok = "log-%d-%s" % (i, uuid.uuid4().hex[:8])
            with SmtpRaw(sl.host, sl.port, timeout=15) as c:
                code, _ = c.read_reply()
                assert code == 220
                c.ehlo("client.example")
                rr, final = c.send_message(
                    "a@example.net", ["alice@example.com"],
                    dot_stuff(b"Subject: " + tok.encode() + b"\r\n\r\nx\r\n"))
                assert final and final[0] == 250, (i, rr, final)
                c.cmd("QUIT", timeout=5)
            toks.append(tok)
            if after_drop is None and i % 5 == 4 and \
                    sl.metric("sluice_log_dropped_total") > 0:
                after_drop = i
            if after_drop is not None and i >= after_drop + 10:
                break
        assert after_drop is not None, \
            "nothing dropped after %d sessions: the pipe never filled?" % len(toks)
        dropped_before = sl.metric("sluice_log_dropped_total")
        print("logging: lines dropped after session %d of %d: %d" % (after_drop, len(toks), dropped_before))
        got = pf.wait_messages(len(toks), 30, lambda m: m.subject in toks)
        assert len(got) == len(toks)
        assert sl.metric("sluice_log_dropped_total") >= dropped_before > 0

        # The pipe is read again: whole lines, and the drop report.
        text = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text += sl.read_available()
            if b"lines dropped" in text:
                break
            time.sleep(0.05)
        lines = text.decode(errors="replace").splitlines()
        rx = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]{12}Z sluice\[\d+\]: ")
        bad = [l for l in lines if not rx.match(l)]
        assert not bad, bad[:5]
        assert any(re.search(r"warning: log: \d+ lines dropped", l) for l in lines), \
            lines[-20:]
        assert sl.alive()
    finally:
        sl.stop()
        os.close(sl.read_fd)
