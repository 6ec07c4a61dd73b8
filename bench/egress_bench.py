"""The harness's egress proxy: throughput of a 100 MB download with TLS interception (the
host has a credential) against the same download made directly, and what a tunnelled HTTPS
connection costs to set up through the proxy. The upstream is an HTTPS server in its own
process, the client is curl (one process per download), the proxy runs on this process's loop
on its own thread: three processes on two cores, as a harness pod beside a sandbox would be.

Where HAProxy is installed (``make bench`` installs it), the same download also goes through
HAProxy terminating TLS and opening TLS to the host again: a C relay doing the interception's
work (decrypt, encrypt) with none of Cadre's code, so each run also says what userspace
interception reaches on this machine at all."""

from __future__ import annotations

import asyncio
import os
import resource
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


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    """CPU seconds a process has used so far (/proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def haproxy_config(listen: int, upstream: int, folder: Path) -> str:
    """HAProxy as a TLS-terminating relay to the upstream (TCP mode, one thread), verifying
    the host's certificate as the proxy does."""
    return (
        "global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n"
        "  timeout client 60s\n  timeout server 60s\n"
        f"frontend relay\n  bind 127.0.0.1:{listen} ssl crt {folder}/leaf.pem\n"
        "  default_backend host\n"
        f"backend host\n  server upstream 127.0.0.1:{upstream} ssl verify required"
        f" ca-file {folder}/upstream-ca.pem sni str(big.test) verifyhost big.test\n"
    )


def _wait_serving(args: list[str], deadline: float) -> None:
    while True:
        try:
            _curl(args)
            return
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


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

    # Debian installs HAProxy in /usr/sbin, which a user's PATH may lack.
    haproxy_path = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        ca = trustme.CA()
        leaf = ca.issue_cert("big.test", "plain.test")
        leaf.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
        leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp / "leaf.pem"))
        port = _free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM, str(tmp / "cert.pem"), str(tmp / "key.pem"),
             str(SIZE), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        haproxy: subprocess.Popen[bytes] | None = None
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
            ready = f"plain.test:{port}:127.0.0.1"
            _wait_serving(["--cacert", str(tmp / "upstream-ca.pem"), "--resolve", ready,
                           f"https://plain.test:{port}/tiny"], deadline)  # fmt: skip
            relay: list[str] = []
            if haproxy_path is not None:
                relay_port = _free_port()
                (tmp / "haproxy.cfg").write_text(haproxy_config(relay_port, port, tmp))
                haproxy = subprocess.Popen(
                    [haproxy_path, "-db", "-f", str(tmp / "haproxy.cfg")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                relay = ["--cacert", str(tmp / "bundle.pem"), "--resolve",
                         f"big.test:{relay_port}:127.0.0.1"]  # fmt: skip
                _wait_serving([*relay, f"https://big.test:{relay_port}/tiny"], deadline)
                relay.append(f"https://big.test:{relay_port}/blob")
            via = ["--proxy", f"http://127.0.0.1:{proxy_port}", "--cacert", str(tmp / "bundle.pem")]
            direct = ["--cacert", str(tmp / "bundle.pem"), "--resolve"]
            proxied_s, direct_s, tunnelled_s, relayed_s = [], [], [], []
            proxy_cpu, relay_cpu = [], []
            for _ in range(RUNS):  # interleaved, so machine noise hits both alike
                direct_s.append(_curl([*direct, f"big.test:{port}:127.0.0.1",
                                       f"https://big.test:{port}/blob"]))  # fmt: skip
                before = _cpu_self()
                proxied_s.append(_curl([*via, f"https://big.test:{port}/blob"]))
                proxy_cpu.append(_cpu_self() - before)
                tunnelled_s.append(_curl([*via, f"https://plain.test:{port}/blob"]))
                if haproxy is not None:
                    before = _cpu_of(haproxy.pid)
                    relayed_s.append(_curl(relay))
                    relay_cpu.append(_cpu_of(haproxy.pid) - before)
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
            for process in (upstream, haproxy):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
    ratio = statistics.median(direct_s) / statistics.median(proxied_s)
    overhead_ms = (statistics.median(tunnel) - statistics.median(plain)) * 1000
    mb = SIZE / 1024 / 1024
    metrics = [
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
        Metric(
            "egress_proxy_cpu_seconds", round(statistics.median(proxy_cpu), 3), "s",
            f"CPU the proxy used for one {mb:.0f} MB intercepted download (its process's"
            f" getrusage, user and system); median of {RUNS}, one run",
        ),
    ]  # fmt: skip
    if haproxy_path is not None:
        version = subprocess.run([haproxy_path, "-v"], capture_output=True, text=True)
        name = version.stdout.split(" - ")[0].removeprefix("HAProxy version ").split()[0]
        metrics += [
            Metric(
                "egress_haproxy_throughput_ratio",
                round(statistics.median(direct_s) / statistics.median(relayed_s), 3),
                "ratio",
                f"reference, not Cadre: the same {mb:.0f} MB through HAProxy {name} (C, one"
                " thread) terminating TLS and opening verified TLS to the host, the work of"
                f" interception without a credential (median {statistics.median(relayed_s):.3f}"
                f" s) / direct; curl, median of {RUNS}, interleaved with the above, one run",
            ),
            Metric(
                "egress_haproxy_cpu_seconds",
                round(statistics.median(relay_cpu), 3),
                "s",
                f"reference, not Cadre: CPU HAProxy used for one {mb:.0f} MB download (/proc,"
                f" 10 ms ticks); median of {RUNS}, one run",
            ),
        ]
    return metrics
