"""The harness's egress proxy: throughput of a 100 MB download with TLS interception (the
host has a credential) against the same download made directly, and what a tunnelled HTTPS
connection costs to set up through the proxy. The upstream is an HTTPS server in its own
process, the client is curl (one process per download), the proxy runs on this process's loop
on its own thread: three processes on two cores, as a harness pod beside a sandbox would be."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trustme

from bench.results import Metric

SIZE = 100 * 1024 * 1024
RUNS = 5
CONNECTS = 50
UPSTREAM = """
import ssl, sys
from aiohttp import web
blob = b"x" * int(sys.argv[3])
async def handle(request):
    response = web.StreamResponse(headers={"Content-Length": str(len(blob))})
    await response.prepare(request)
    view = memoryview(blob)
    for at in range(0, len(blob), 1 << 20):
        await response.write(view[at:at + (1 << 20)])
    return response
app = web.Application()
app.router.add_get("/blob", handle)
app.router.add_get("/tiny", lambda request: web.Response(text="ok"))
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(sys.argv[1], sys.argv[2])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[4]), ssl_context=context, print=None)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _curl(args: list[str], timing: str = "time_total") -> float:
    """Seconds curl reports for one transfer: ``time_total``, or ``time_appconnect`` (until
    the TLS handshake with the host ended, through a tunnel if asked)."""
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", f"%{{{timing}}}", *args],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return float(out.stdout)


def measure() -> list[Metric]:
    if shutil.which("curl") is None:
        return []
    from cadre.api.egress import parse_rule
    from cadre.harness.egress_proxy import Credential, EgressProxy
    from cadre.harness.egress_tls import Authority
    from cadre.operator.egress_ca import new_authority

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        ca = trustme.CA()
        leaf = ca.issue_cert("big.test", "plain.test")
        leaf.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
        port = _free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM, str(tmp / "cert.pem"), str(tmp / "key.pem"),
             str(SIZE), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            cert_pem, key_pem = new_authority("bench", "default")
            (tmp / "bundle.pem").write_bytes(cert_pem.encode() + ca.cert_pem.bytes())
            ca.cert_pem.write_to_path(str(tmp / "upstream-ca.pem"))
            hosts = [f"big.test:{port}", f"plain.test:{port}"]
            proxy = EgressProxy(
                hosts, [Credential(parse_rule(hosts[0]), "Bearer", "t")],
                Authority(cert_pem.encode(), key_pem.encode()), lambda record: None,
                ssl.create_default_context(cafile=str(tmp / "upstream-ca.pem")),
                resolve=lambda host: "127.0.0.1",
            )  # fmt: skip
            proxy_port = asyncio.run_coroutine_threadsafe(proxy.start("127.0.0.1", 0), loop).result(
                30
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    ready = f"plain.test:{port}:127.0.0.1"
                    _curl(["--cacert", str(tmp / "upstream-ca.pem"), "--resolve", ready,
                           f"https://plain.test:{port}/tiny"])  # fmt: skip
                    break
                except subprocess.CalledProcessError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            via = ["--proxy", f"http://127.0.0.1:{proxy_port}", "--cacert", str(tmp / "bundle.pem")]
            direct = ["--cacert", str(tmp / "bundle.pem"), "--resolve"]
            proxied_s, direct_s, tunnelled_s = [], [], []
            for _ in range(RUNS):  # interleaved, so machine noise hits both alike
                direct_s.append(_curl([*direct, f"big.test:{port}:127.0.0.1",
                                       f"https://big.test:{port}/blob"]))  # fmt: skip
                proxied_s.append(_curl([*via, f"https://big.test:{port}/blob"]))
                tunnelled_s.append(_curl([*via, f"https://plain.test:{port}/blob"]))
            tunnel, plain = [], []
            for _ in range(CONNECTS):
                handshake = "time_appconnect"
                plain.append(_curl([*direct, f"plain.test:{port}:127.0.0.1",
                                    f"https://plain.test:{port}/tiny"], handshake))  # fmt: skip
                tunnel.append(_curl([*via, f"https://plain.test:{port}/tiny"], handshake))
            asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            upstream.terminate()
            upstream.wait(timeout=30)
    ratio = statistics.median(direct_s) / statistics.median(proxied_s)
    overhead_ms = (statistics.median(tunnel) - statistics.median(plain)) * 1000
    mb = SIZE / 1024 / 1024
    return [
        Metric(
            "egress_proxy_throughput_ratio", round(ratio, 3), "ratio",
            f"{mb:.0f} MB over HTTPS through the egress proxy with TLS interception and a"
            f" credential applied (median {statistics.median(proxied_s):.3f} s) / the same"
            f" download direct (median {statistics.median(direct_s):.3f} s), as throughputs;"
            f" curl, median of {RUNS} each, interleaved, one run",
            ">= 0.8",
        ),
        Metric(
            "egress_tunnel_throughput_ratio",
            round(statistics.median(direct_s) / statistics.median(tunnelled_s), 3), "ratio",
            f"the same {mb:.0f} MB through the proxy's CONNECT tunnel (host allowed, no"
            f" credential: bytes relayed untouched; median {statistics.median(tunnelled_s):.3f}"
            f" s) / direct; curl, median of {RUNS} each, interleaved, one run",
        ),
        Metric(
            "egress_connect_overhead_ms", round(overhead_ms, 3), "ms",
            "time to the end of the TLS handshake through a CONNECT tunnel of the proxy (host"
            " allowed, no credential: SNI checked, bytes relayed) minus the same directly;"
            f" medians of {CONNECTS} curl connections each, interleaved, one run",
            "<= 5",
        ),
    ]  # fmt: skip
