"""Security invariant, end to end: the model's API key lives in the harness and nowhere a
sandbox can reach. The agent's own sandbox runs a probe through its bash tool, as a hijacked
model would, looking for the key in its environment, in every process's environ and cmdline,
in every file it can read under the node's state (all pods' volumes and claims), /etc, /run
and /dev/shm, and by asking the API server for the Secret. The same probe run as root (the test
process) does find the key: it searches where the key really is, and only isolation stops it."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
from cadre.localcluster.node.kubelet import Kubelet

from tests.harness.conftest import ModelFactory, until, work_requests
from tests.localcluster.conftest import Served
from tests.operator.conftest import NS, create_agent, create_task, ended, model_key_secret
from tests.system.conftest import pid_of

# Matches a key and never the probe's own text (the brackets do not match themselves).
PATTERN = "sk-ant-cadre-[0-9a-f]{32}"
CANARY = "canary-[0-9]{8}"


def probe(roots: list[str], api: str) -> str:
    """A bash script: one line per finding, and controls that show the searches ran."""
    where = " ".join(roots)
    return f"""
echo canary-$((12345678)) > canary.txt
echo "env-hits: $(env | grep -cE '{PATTERN}')"
checked=0
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  if tr '\\0' '\\n' < "$f" > /tmp/.seen 2>/dev/null; then
    checked=$((checked+1))
    grep -qE '{PATTERN}' /tmp/.seen && echo "proc-hit: $f"
  fi
done
rm -f /tmp/.seen
echo "proc-readable: $checked"
grep -rlsE '{PATTERN}' {where} | head -5 | sed 's/^/file-hit: /'
echo "canary-found: $(grep -rlsE '{CANARY}' {where} | grep -c canary.txt)"
python3 - <<'PY'
import ssl, urllib.error, urllib.request
context = ssl._create_unverified_context()
for path in ("/api/v1/namespaces/{NS}/secrets/anthropic", "/api/v1/namespaces/{NS}/secrets"):
    try:
        urllib.request.urlopen("{api}" + path, context=context, timeout=5)
        print("api-status:", 200)
    except urllib.error.HTTPError as err:
        print("api-status:", err.code)
    except urllib.error.URLError as err:  # its NetworkPolicy (egress None) enforced
        print("api-unreachable:", err.reason)
PY
echo probe-done
"""


async def test_no_route_from_a_sandbox_reaches_the_api_key(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory, tmp_path: Path,
) -> None:  # fmt: skip
    handle, http = cluster.handle, cluster.http
    kubelet, server = handle.kubelet, handle.server
    assert isinstance(kubelet, Kubelet)
    assert server is not None
    if not kubelet.isolate:
        pytest.skip("pods run as separate users only when the local cluster runs as root")
    key = "sk-ant-cadre-" + secrets.token_hex(16)
    secret = model_key_secret("anthropic", key)
    assert http("POST", f"/api/v1/namespaces/{NS}/secrets", secret).status_code == 201
    # The host's folders (the state folder holds every pod's volumes), and the sandbox's own
    # writable places (its root of its own has only these besides the system's folders).
    roots = [str(kubelet.state_dir), str(tmp_path), "/etc", "/run", "/dev/shm", "/workspace",
             "/tmp", "/var"]  # fmt: skip
    # Where the sandbox would reach the API server: the node's address with a pod network.
    api = f"https://{kubelet.api_address[0]}:{kubelet.api_address[1]}"
    script = probe(roots, api)
    steps = [
        {"text": "Looking around.", "tool_uses": [{"name": "bash", "input": {"command": script}}]},
        {"text": "Done looking."},
    ]
    url, model = await scripted({"agents": {"engineer": steps}})
    create_agent(http, url)  # uses the Secret above (its own create gets 409)
    create_task(http, "probe", "Look for the key.")
    # While the sandbox runs, the test (root) reads its process and pod from outside.
    sandbox_pid = await until(lambda: pid_of(handle, "sbx-probe"), within=60)
    environ = await asyncio.to_thread(Path(f"/proc/{sandbox_pid}/environ").read_bytes)
    pod = http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-probe").json()

    done = await until(lambda: ended(http, "probe"), within=90)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    result = json.dumps(work_requests(model.requests)[-1]["messages"][-1]["content"])
    output = json.loads(result)[0]["content"]
    text = output if isinstance(output, str) else json.dumps(output)
    assert "probe-done" in text, text
    assert key not in text
    assert "env-hits: 0" in text
    assert "proc-hit" not in text, text
    assert "file-hit" not in text, text
    assert "proc-readable: 0" not in text  # it could read its own processes
    assert "canary-found: 1" in text, text  # the file search reached its own workspace
    # Refused by the API server (no token), or not reachable at all (NetworkPolicy enforced).
    answers = ("api-status: 401", "api-status: 403", "api-unreachable:")
    assert sum(text.count(a) for a in answers) == 2, text
    # From outside: nothing in the sandbox's process environment or pod spec names the key.
    assert key.encode() not in environ
    assert "anthropic" not in json.dumps(pod["spec"])

    # The control: the same probe as root finds the key where the harness really holds it.
    harness_pid = pid_of(handle, "harness-engineer-0")
    assert harness_pid is not None
    control = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=tmp_path, stdout=asyncio.subprocess.PIPE
    )
    found = (await control.communicate())[0].decode()
    assert f"proc-hit: /proc/{harness_pid}/environ" in found, found
