"""Every name that crosses a process boundary: labels, annotations, object names, ports and
environment variables that the operator, the harness, the CLI and the chart must agree on.

Deterministic names make every create safe to repeat (409 AlreadyExists means done), and one
home for labels keeps selectors and the objects they select from drifting apart. The sandbox's
own names (its port, its environment) live in ``cadre.sandbox.protocol``, since the sandbox
may import nothing of Cadre but itself.
"""

from __future__ import annotations

MANAGED_BY = {"app.kubernetes.io/managed-by": "cadre", "app.kubernetes.io/part-of": "cadre"}
TASK_LABEL = "cadre.dev/task"
AGENT_LABEL = "cadre.dev/agent"
PARENT_LABEL = "cadre.dev/parent"
"""On a delegated Task: its parent's name (the harness lists a parent's children by it)."""
TEAM_LABEL = "cadre.dev/team"
"""On a delegated Task: the Team whose rules govern its tree."""
REVIEW_OF_LABEL = "cadre.dev/review-of"
"""On a review Task: the delegated Task whose delivery it inspects."""
DEPTH_ANNOTATION = "cadre.dev/depth"
DELEGATION_ANNOTATION = "cadre.dev/delegation-id"
"""The parent session's tool call that asked for the Task (what makes its creation idempotent)."""
COMPONENT_LABEL = "app.kubernetes.io/component"
TRACE_PARENT_ANNOTATION = "cadre.dev/trace-parent"
"""On a delegated or review Task: the W3C traceparent of the Task it works for (api/tracing.py)."""
CONFIG_HASH_ANNOTATION = "cadre.dev/config-hash"
"""On a harness pod template: a digest of what it was built from (a change rolls the pod)."""
FINALIZER = "cadre.dev/operator"
"""The operator's finalizer and kopf's annotation prefix."""

HARNESS_EVENTS_PORT = 8090
"""Where each harness serves its sessions' events (``cadre harness --events-port``)."""
HARNESS_STATE_DIR = "/var/lib/cadre"
"""The harness's volume: session logs and the sandbox-token key."""
MEMORY_KEY = "entries.yaml"
"""The key of an Agent's memory ConfigMap that holds its entries."""

MODEL_KEY_LABEL = "cadre.dev/model-api-key"
TOOL_CREDENTIAL_LABEL = "cadre.dev/tool-credential"
"""A Secret's owner consents with ``"true"`` that a key of it may be sent to a tool server
(an Agent's MCP server): a consent of its own, apart from the model key's."""
MCP_SERVERS_ENV = "CADRE_MCP_SERVERS"
"""The MCP servers the operator checked, as JSON, for the harness (not the Agent's spec, which
may have changed to something refused since)."""


MCP_TOOL_PREFIX = "mcp__"
"""How the model sees an MCP server's tool: ``mcp__<server>__<tool>``."""


def mcp_credential_env(server: str) -> str:
    """The harness's environment variable holding an MCP server's credential."""
    return "CADRE_MCP_CREDENTIAL_" + server.upper().replace("-", "_")


"""On a Secret: ``"true"`` lets Agents use it as their model key. Without it, an Agent naming the
Secret is refused, so the right to create Agents is not the right to read every Secret."""
MODEL_ENDPOINTS_ENV = "CADRE_MODEL_ENDPOINTS"
"""The operator's allow-list of model endpoints (comma-separated URLs; Helm value
``modelEndpoints``). An Agent's ``baseURL`` outside it is refused."""
MODEL_BASE_URL_ENV = "CADRE_MODEL_BASE_URL"
OTLP_ENDPOINT_ENV = "CADRE_OTLP_ENDPOINT"
"""The operator's OTLP/HTTP endpoint for traces (Helm value ``tracing.otlpEndpoint``); the
harness gets it as ``OTEL_EXPORTER_OTLP_ENDPOINT``. Unset: no traces."""
"""The model endpoint the operator approved for a harness (empty: the Anthropic API). The
harness reads this, never the Agent's live spec, which may have changed since."""
API_KEY_ENV = "ANTHROPIC_API_KEY"
"""The harness's model key, from the Agent's Secret (the anthropic SDK reads this name too)."""
POD_NAMESPACE_ENV = "POD_NAMESPACE"
POD_IP_ENV = "POD_IP"


def sandbox_name(task: str) -> str:
    """Pod, Service and NetworkPolicy of a Task's sandbox. The prefix makes it a valid
    DNS-1035 Service name even when the Task's name starts with a digit."""
    return f"sbx-{task}"


def sandbox_token_secret_name(task: str) -> str:
    return f"sbx-{task}-token"


def sandbox_workspace_name(task: str) -> str:
    return f"sbx-{task}-workspace"


def sandbox_labels(task: str, agent: str) -> dict[str, str]:
    """Labels of every sandbox object; computed here only, never taken from user input."""
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "cadre-sandbox",
        COMPONENT_LABEL: "sandbox",
        TASK_LABEL: task,
        AGENT_LABEL: agent,
    }


def sandbox_selector(task: str) -> dict[str, str]:
    """Selects exactly one Task's sandbox pod."""
    return {COMPONENT_LABEL: "sandbox", TASK_LABEL: task}


def harness_name(agent: str) -> str:
    """StatefulSet, ServiceAccount, Role and RoleBinding of an Agent's harness."""
    return f"harness-{agent}"


def harness_pod_name(agent: str) -> str:
    """The harness StatefulSet's only pod."""
    return f"{harness_name(agent)}-0"


def memory_name(agent: str) -> str:
    """The ConfigMap holding an Agent's memory (``kubectl edit configmap memory-NAME``)."""
    return f"memory-{agent}"


def harness_labels(agent: str) -> dict[str, str]:
    return {**MANAGED_BY, "app.kubernetes.io/name": "cadre-harness", **harness_selector(agent)}


def harness_selector(agent: str) -> dict[str, str]:
    """Selects the harness pod of one Agent (the only client its sandboxes accept)."""
    return {COMPONENT_LABEL: "harness", AGENT_LABEL: agent}


def bind_host(pod_ip: str | None) -> str:
    """Where a Cadre server listens (harness events, operator metrics and liveness): in a pod,
    the pod's own address (probes, Services and the API server's pod proxy reach it there);
    outside a pod, loopback only. Never every interface: in the local cluster, whose pods
    share the node's network, 0.0.0.0:8090 took port 8090 from every harness pod (and
    exposed transcripts beyond the machine outside a pod). The price in a real cluster:
    ``kubectl port-forward``, which connects to the pod's loopback, does not reach them."""
    return pod_ip or "127.0.0.1"
