"""
The live status page in a real headless browser (Debian's chromium, from
scripts/install-deps.sh): sluice in front of a real Postfix, the session's
dnsmasq serving bl.test (BLOCKLISTED 127.0.0.99 and BLOCKLISTED2
127.0.0.97 are listed; CLIENT23 is clean).

The test makes traffic with known counts: N messages delivered by the
clean client, K connections from BLOCKLISTED2 that hang up while shaped,
M connections from BLOCKLISTED held open and shaped. It then loads
GET / in chromium with a virtual-time budget of 4 s (the page fetches
/status.json at once and every 2 s) and asserts that those numbers are on
the rendered page. A screenshot of the page is kept in the test's work
directory (status-page.png) and copied to build/artefacts/, since the work
directory of a passing test is removed. The page and status.json are also checked
over plain HTTP for their headers and shape.

Every wait is bounded in time, every loop in count and time.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid

import pytest

import harness
from harness import BLOCKLISTED, BLOCKLISTED2, CLIENT23, CLIENT23_NAME, SmtpRaw, dot_stuff
from test_control import open_client, sanitizer_reports, _USED  # noqa: F401

N_DELIVERED = 3
M_SHAPED = 2
K_HUNG_UP = 2
PAGE_BUDGET_MS = 4000

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium(workdir, *args, timeout=60):
    exe = shutil.which("chromium")
    if not exe:
        pytest.fail("chromium is missing: run scripts/install-deps.sh", pytrace=False)
    profile = os.path.join(workdir, "chromium-profile-%s" % uuid.uuid4().hex[:6])
    os.makedirs(profile)
    r = subprocess.run([exe] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       cwd=workdir)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def status(port):
    st, _, body = get(port, "/status.json")
    assert st == 200
    return json.loads(body)


def message(tok):
    t = tok.encode()
    return (b"From: Status <a@example.net>\r\nTo: <alice@example.com>\r\n"
            b"Subject: " + t + b"\r\nDate: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            b"Message-ID: <" + t + b"@example.net>\r\n\r\nHello.\r\n")


def deliver(sl, tok):
    with SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=30) as c:
        assert c.read_reply()[0] == 220
        c.ehlo(CLIENT23_NAME)
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok)))
        assert final and final[0] == 250, (rr, final)


def shaped_from(port, source):
    return sum(1 for c in status(port)["clients"] if c["addr"] == source and c["shaped"])


def element(dom, ident):
    m = re.search(r'id="%s"[^>]*>([^<]*)<' % re.escape(ident), dom)
    return m.group(1) if m else None


def test_status_page_in_chromium(postfix, sluice, workdir):
    pf = postfix()
    mport = harness.free_port()
    sl = sluice(pf, metrics_listen="127.0.0.1:%d" % mport, dnsbl_sites="bl.test*3",
                greet_wait="1s", shape_threshold="3", shape_rate="5", shape_time="60s")
    _USED.append(sl)

    # plain HTTP: the page, its script and the JSON, no external assets
    st, hdr, page = get(mport, "/")
    assert st == 200 and hdr["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in hdr["Content-Security-Policy"]
    assert b'<script src="status.js">' in page and b"http" not in page.replace(
        b"http://www.w3.org/2000/svg", b"")
    st, hdr, js = get(mport, "/status.js")
    assert st == 200 and hdr["Content-Type"].startswith("text/javascript")
    assert b"status.json" in js and b"innerHTML" not in js
    assert get(mport, "/nothing")[0] == 404

    # N delivered by a clean client
    for i in range(N_DELIVERED):
        deliver(sl, "status-%d-%s" % (i, uuid.uuid4().hex[:8]))
    # K shaped sessions that hang up
    for _ in range(K_HUNG_UP):
        s = open_client(sl, BLOCKLISTED2)
        assert harness.wait_until(lambda: shaped_from(mport, BLOCKLISTED2) == 1, 10), \
            status(mport)
        # FIN, not RST: a close() with unread greeting bytes in the
        # socket resets, which sluice counts as a connection error.
        s.shutdown(socket.SHUT_WR)
        assert harness.wait_until(lambda: shaped_from(mport, BLOCKLISTED2) == 0, 10)
        s.close()
    # M shaped now
    held = [open_client(sl, BLOCKLISTED) for _ in range(M_SHAPED)]
    try:
        def counts():
            s = status(mport)
            return (s["last_hour"]["delivered"], s["sessions"]["shaped"],
                    s["last_hour"]["shaped_hangups"])
        want = (N_DELIVERED, M_SHAPED, K_HUNG_UP)
        assert harness.wait_until(lambda: counts() == want, 15), (counts(), want)
        s = status(mport)
        assert s["sessions"]["by_phase"]["greeting"]["shaped"] + \
            s["sessions"]["by_phase"]["helo"]["shaped"] == M_SHAPED
        top = s["clients"][0]
        assert top["addr"] == BLOCKLISTED and top["sessions"] == M_SHAPED
        assert "DNSBL" in top["signals"] and top["shaped"]
        assert len(s["minutes"]) >= 1 and s["workers"][0]["pool"]["open"] >= 1

        url = "http://127.0.0.1:%d/" % mport
        t0 = time.monotonic()
        rc, dom, err = chromium(workdir, "--virtual-time-budget=%d" % PAGE_BUDGET_MS,
                                "--dump-dom", url)
        elapsed = time.monotonic() - t0
        assert rc == 0, err[-2000:]
        got = {i: element(dom, i) for i in ("hour-delivered", "sessions-shaped",
                                            "hour-shaped-hangups", "sessions-open", "error")}
        assert got["hour-delivered"] == str(N_DELIVERED), (got, dom[:3000])
        assert got["sessions-shaped"] == str(M_SHAPED), got
        assert got["hour-shaped-hangups"] == str(K_HUNG_UP), got
        assert got["sessions-open"] == str(M_SHAPED), got
        assert got["error"] == "", got
        # the top client row, the per-worker pool row and the chart bars
        assert re.search(r"<td[^>]*>%s</td>" % re.escape(BLOCKLISTED), dom), dom[-3000:]
        assert "DNSBL" in dom
        assert re.search(r'<svg id="chart".*<rect', dom, re.S), "no chart bars"
        print("chromium --dump-dom: %.1f s wall, %d ms virtual budget" % (elapsed, PAGE_BUDGET_MS))

        shot = os.path.join(workdir, "status-page.png")
        rc, out, err = chromium(workdir, "--virtual-time-budget=%d" % PAGE_BUDGET_MS,
                                "--window-size=1200,1700", "--screenshot=" + shot, url)
        assert rc == 0 and os.path.getsize(shot) > 10000, err[-2000:]
        with open(shot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        # The work dir goes when the test passes: keep a copy in build/.
        keep = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                            "build", "artefacts")
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "status-page.png"))
    finally:
        for h in held:
            h.close()
