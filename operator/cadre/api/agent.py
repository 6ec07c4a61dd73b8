"""The ``Agent`` kind: one AI employee, run by the operator as a long-lived harness."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from cadre.api.cel import CelRule
from cadre.api.limits import Limits
from cadre.api.meta import (
    ApiModel,
    Condition,
    DnsLabel,
    ObjectName,
    Quantity,
    SecretKeyReference,
    ShortText,
    UsdAmount,
    conditions_field,
)


class Tool(StrEnum):
    """The sandbox tools a model may be offered."""

    BASH = "bash"
    READ = "read"
    WRITE = "write"
    EDIT = "edit"
    GLOB = "glob"
    GREP = "grep"


HeaderName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
]
"""An HTTP header's name."""


class EgressMode(StrEnum):
    """How far a sandbox may reach out."""

    NONE = "None"
    """No egress at all (the default): the sandbox talks only to its harness."""
    ALLOW_LIST = "AllowList"
    """Only the CIDRs in ``cidrs``."""
    PUBLIC = "Public"
    """The public internet, never the cluster's private ranges or link-local addresses."""
    HOSTS = "Hosts"
    """Only the host names in ``hosts``, over HTTP and HTTPS through the harness's egress
    proxy, which applies ``credentials`` the sandbox never sees."""


HostPattern = Annotated[
    str,
    StringConstraints(
        max_length=253,
        # A DNS name whose last label starts with a letter (no IP literal), or ``*.`` and at
        # least two labels (``*.github.com``; never ``*`` nor ``*.com``); an optional port.
        pattern=r"^(\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
        r"\.[a-z]([-a-z0-9]*[a-z0-9])?|([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*"
        r"[a-z]([-a-z0-9]*[a-z0-9])?)(:[0-9]{1,5})?$",
    ),
]
"""A host an egress proxy may reach: ``pypi.org``, ``*.github.com``, ``pypi.internal:8443``
(without a port: 80 and 443)."""


class CredentialScheme(StrEnum):
    """How the egress proxy applies a credential to a request."""

    BEARER = "Bearer"
    """``Authorization: Bearer <value>``."""
    BASIC = "Basic"
    """``Authorization: Basic base64(username:value)`` (git over HTTPS, package indexes)."""
    HEADER = "Header"
    """The value alone in the header ``header`` (``X-Api-Key``, ``PRIVATE-TOKEN``)."""


class EgressCredential(ApiModel):
    """A credential the harness's egress proxy adds to the sandbox's requests to one host."""

    cel_rules = (
        CelRule(
            rule="self.scheme != 'Header' || has(self.header)",
            message="scheme Header needs header, the header's name",
            field_path=".header",
        ),
        CelRule(
            rule="self.scheme != 'Basic' || has(self.username)",
            message="scheme Basic needs username",
            field_path=".username",
        ),
    )

    host: HostPattern
    """Exactly one of ``hosts`` (not a wildcard): the credential goes to no other host."""
    secret_ref: SecretKeyReference
    """A key of a Secret labelled ``cadre.dev/tool-credential: "true"`` (its owner's consent
    that Cadre may send it on tools' behalf), in the Agent's namespace."""
    scheme: CredentialScheme
    """``Bearer``, ``Basic`` or ``Header``."""
    header: HeaderName | None = None
    """The header for scheme ``Header``."""
    username: Annotated[str, StringConstraints(min_length=1, max_length=256,
                                               pattern=r"^[^:\s]+$")] | None = None  # fmt: skip
    """The user for scheme ``Basic`` (``x-access-token`` for a GitHub token)."""


Cidr = Annotated[
    str,
    StringConstraints(
        min_length=9,
        max_length=43,
        pattern=r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$|^[0-9a-fA-F:]+/[0-9]{1,3}$",
    ),
]


class Egress(ApiModel):
    """Outbound network access of the Agent's sandboxes. The model API is never reachable."""

    cel_rules = (
        CelRule(
            rule="self.mode == 'AllowList' || size(self.cidrs) == 0",
            message="egress.cidrs is only allowed when egress.mode is AllowList",
            field_path=".cidrs",
        ),
        CelRule(
            rule="self.mode != 'AllowList' || size(self.cidrs) > 0",
            message="egress.mode AllowList needs at least one entry in egress.cidrs",
            field_path=".cidrs",
        ),
        CelRule(
            rule="self.mode == 'Hosts' || (size(self.hosts) == 0 && size(self.credentials) == 0)",
            message="egress.hosts and egress.credentials need egress.mode Hosts",
            field_path=".hosts",
        ),
        CelRule(
            rule="self.mode != 'Hosts' || size(self.hosts) > 0",
            message="egress.mode Hosts needs at least one entry in egress.hosts",
            field_path=".hosts",
        ),
        CelRule(
            rule="self.credentials.all(c, c.host in self.hosts && !c.host.startsWith('*'))",
            message="each credential's host must be listed in egress.hosts, and not as a wildcard",
            field_path=".credentials",
        ),
    )

    mode: EgressMode = EgressMode.NONE
    """``None`` (default), ``AllowList``, ``Public`` or ``Hosts``."""
    cidrs: list[Cidr] = Field(
        default_factory=list, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Destinations allowed in ``AllowList`` mode, such as ``203.0.113.0/24``."""
    hosts: list[HostPattern] = Field(
        default_factory=list, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Host names allowed in ``Hosts`` mode (``pypi.org``, ``*.github.com``)."""
    credentials: list[EgressCredential] = Field(default_factory=list, max_length=16)
    """Credentials the proxy applies, per host, in ``Hosts`` mode."""
    ca_bundle: Annotated[str, StringConstraints(max_length=65536)] | None = None
    """Base64 PEM certificates the proxy trusts, besides the system's, when it connects to a
    host with a credential (an internal index with a private CA)."""


class ComputeResources(ApiModel):
    """An amount of each resource a sandbox container uses."""

    cpu: Quantity | None = None
    """CPU, such as ``500m`` or ``2``."""
    memory: Quantity | None = None
    """Memory, such as ``1Gi``."""
    ephemeral_storage: Quantity | None = Field(default=None, alias="ephemeral-storage")
    """Node-local scratch space (``/tmp``), such as ``1Gi``."""


class SandboxResources(ApiModel):
    """Requests and limits of the sandbox container; limits are always set (defaults apply)."""

    requests: ComputeResources | None = None
    """What the scheduler reserves; defaults to the limits."""
    limits: ComputeResources | None = None
    """The hard ceiling; unset entries take the operator's defaults."""


class WorkspaceRetention(StrEnum):
    """What happens to a sandbox's workspace volume when its Task ends."""

    DELETE = "Delete"
    RETAIN = "Retain"


class Workspace(ApiModel):
    """The sandbox's working directory, a volume that outlives sandbox restarts."""

    size: Quantity = "1Gi"
    """Size of the workspace volume."""
    retention: WorkspaceRetention = WorkspaceRetention.DELETE
    """``Delete`` the volume when the Task ends, or ``Retain`` it for inspection."""


class Sandbox(ApiModel):
    """Where the Agent's commands run. The sandbox never holds a credential of any kind."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    """Container image; defaults to the operator's sandbox image. Must run ``cadre.sandbox``."""
    resources: SandboxResources | None = None
    """CPU, memory and scratch space of the sandbox container."""
    runtime_class_name: DnsLabel | None = None
    """A RuntimeClass for stronger isolation, such as ``gvisor`` or ``kata``."""
    egress: Egress = Field(default_factory=Egress)
    """Outbound network access; none by default."""
    workspace: Workspace = Field(default_factory=Workspace)
    """The workspace volume."""


class LessonSource(StrEnum):
    """Who writes the lesson recorded when a Task ends."""

    MODEL = "Model"
    """The model, asked once more at the end (the conversation is read from the prompt cache)."""
    SUMMARY = "Summary"
    """The harness: how the Task ended and the start of its result, with no model call."""


class Memory(ApiModel):
    """What the Agent remembers across Tasks."""

    enabled: bool = True
    """Record lessons and load them into later sessions' system prompts."""
    max_entries: Annotated[int, Field(ge=1, le=1000)] = 100
    """Entries kept; the least useful are compacted away when full."""
    lessons: LessonSource = LessonSource.MODEL
    """Who writes the end-of-Task lesson: ``Model`` (default) or ``Summary``."""


class Pricing(ApiModel):
    """Prices per million tokens, overriding the operator's table for this Agent's model."""

    input: UsdAmount
    """Uncached input tokens."""
    output: UsdAmount
    """Output tokens."""
    cache_read: UsdAmount | None = None
    """Input tokens read from the prompt cache; defaults to a tenth of ``input``."""
    cache_write: UsdAmount | None = None
    """Input tokens written to the prompt cache; defaults to 1.25 times ``input``."""


class CompactionMode(StrEnum):
    """How a long session's context is kept within the model's window."""

    AUTO = "Auto"
    """The API's own compaction where the model has it (claude-sonnet-4-6, claude-opus-4-6),
    else the harness's."""
    SERVER = "Server"
    """The API's own (``compact_20260112``), whatever the model: for endpoints that have it."""
    CLIENT = "Client"
    """The harness asks the model to summarise the older turns and keeps the recent ones."""
    OFF = "Off"
    """Never: a session that outgrows the window fails ``ContextWindowExceeded``."""


class ClearToolResults(ApiModel):
    """The API's clearing of old tool results (``clear_tool_uses_20250919``), before any
    compaction: results of all but the latest tool calls are replaced by a placeholder."""

    at_percent: Annotated[int, Field(ge=10, le=95)] = 50
    """Clear once a request's input reaches this share of the window."""
    keep_tool_uses: Annotated[int, Field(ge=1, le=100)] = 8
    """The latest tool calls whose results stay."""


class ContextPolicy(ApiModel):
    """How the harness keeps a session within the model's context window."""

    window_tokens: Annotated[int, Field(ge=4096, le=10_000_000)] | None = None
    """The model's context window; defaults to the harness's table (200,000 for Claude)."""
    compaction: CompactionMode = CompactionMode.AUTO
    """``Auto`` (default), ``Server``, ``Client`` or ``Off``."""
    compact_at_percent: Annotated[int, Field(ge=10, le=95)] = 75
    """Compact once a request's input reaches this share of the window."""
    keep_recent_turns: Annotated[int, Field(ge=0, le=50)] = 4
    """Client-side: the model's last answers (with their tool results) kept verbatim."""
    instructions: Annotated[str, StringConstraints(max_length=4096)] = ""
    """Added to the summary request: what a summary of this Agent's work must keep."""
    clear_tool_results: ClearToolResults | None = None
    """Let the API clear old tool results (each clearing costs one cache rebuild; it clears
    at least a tenth of the window at a time so that is rare). Off unless set."""


class McpCredential(ApiModel):
    """A credential the harness sends to an MCP server; the sandbox never sees it."""

    secret_ref: SecretKeyReference
    """A key of a Secret labelled ``cadre.dev/tool-credential: "true"`` (its owner's consent
    that it may be sent to a tool server), in the Agent's namespace."""
    header: HeaderName = "Authorization"
    """The HTTP header it goes in."""
    scheme: Annotated[str, StringConstraints(max_length=32, pattern=r"^[A-Za-z0-9-]*$")] = "Bearer"
    """Written before the value (``Bearer``); empty: the value alone."""


class McpServer(ApiModel):
    """An MCP server whose tools the Agent's harness offers the model and calls itself
    (streamable HTTP, the official ``mcp`` SDK)."""

    cel_rules = (
        CelRule(
            rule="!has(self.credential) || self.url.startsWith('https://')",
            message="a credential is only sent over HTTPS",
            field_path=".url",
        ),
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=24,
                                           pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]  # fmt: skip
    """Tools are offered as ``mcp__<name>__<tool>``."""
    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s/?#]+.*$")]
    """The server's streamable HTTP endpoint (``https://tickets.example/mcp``)."""
    tools: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """The server's tools the model may see; empty: every tool it lists."""
    credential: McpCredential | None = None
    """Sent with every request to this server (HTTPS only)."""
    ca_bundle: Annotated[str, StringConstraints(max_length=65536)] | None = None
    """Base64 PEM certificates that sign the server's; none: the system's trusted roots."""
    timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 60
    """How long one tool call may take."""


class AgentSpec(ApiModel):
    """The desired state of an Agent."""

    role: Annotated[ShortText, StringConstraints(min_length=1)]
    """One line that says what this Agent does; teammates read it when choosing whom to ask."""
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """The model name sent to the Messages API, such as ``claude-sonnet-4-6``."""
    base_url: (
        Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s]+$")] | None
    ) = Field(default=None, alias="baseURL")
    """An Anthropic-compatible endpoint; unset means the SDK's default."""
    system_prompt: Annotated[str, StringConstraints(max_length=32768)] = ""
    """Standing instructions, placed after the role in every session's system prompt."""
    api_key_secret_ref: SecretKeyReference
    """The Secret key holding the model API key. Only this Agent's harness ever reads it."""
    tools: list[Tool] = Field(
        default_factory=lambda: list(Tool),
        max_length=6,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Sandbox tools offered to the model; an empty list means the Agent never gets a sandbox."""
    sandbox: Sandbox = Field(default_factory=Sandbox)
    """Where the Agent's commands run."""
    limits: Limits = Field(default_factory=Limits)
    """Bounds on each session; a Task may override them."""
    memory: Memory = Field(default_factory=Memory)
    """What the Agent remembers across Tasks."""
    context: ContextPolicy = Field(default_factory=ContextPolicy)
    """How long sessions are kept within the model's context window."""
    pricing: Pricing | None = None
    """Token prices for cost accounting, when the operator's table lacks this model."""
    max_concurrent_tasks: Annotated[int, Field(ge=1, le=1000)] = 4
    """Tasks worked at once; further Tasks wait Pending."""
    mcp_servers: list[McpServer] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """MCP servers whose tools the harness offers (brain side: their credentials never reach
    the sandbox). Their calls default to ``Ask`` unless a Policy rule allows them."""


class HarnessStatus(ApiModel):
    """What the operator sees of the Agent's harness."""

    pod: ObjectName | None = None
    """The harness pod's name."""
    ready: bool = False
    """Whether the harness pod is Ready."""
    restarts: Annotated[int, Field(ge=0)] = 0
    """How often the harness container restarted."""


class AgentStatus(ApiModel):
    """The observed state of an Agent."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` the operator last acted on."""
    conditions: list[Condition] = conditions_field()
    """``Ready``: the harness runs with its API key and takes Tasks."""
    harness: HarnessStatus | None = None
    """The harness pod."""
    active_tasks: Annotated[int, Field(ge=0)] = 0
    """Tasks being worked now."""
    queued_tasks: Annotated[int, Field(ge=0)] = 0
    """Tasks waiting for a free slot (``maxConcurrentTasks``)."""
    memory_entries: Annotated[int, Field(ge=0)] = 0
    """Entries in the Agent's memory."""
    policies: list[DnsLabel] = Field(default_factory=list, max_length=100)
    """The Policies that select this Agent: what governs its tool calls."""


class Agent(ApiModel):
    """An AI employee: a role, a model and a harness that works its Tasks."""

    cel_rules = (
        CelRule(
            rule="!has(self.metadata.name) || size(self.metadata.name) <= 40",
            message="Agent names are at most 40 characters: they name the harness StatefulSet "
            "and its pod",
        ),
    )

    api_version: Literal["cadre.dev/v1alpha1"] = "cadre.dev/v1alpha1"
    kind: Literal["Agent"] = "Agent"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: AgentSpec
    status: AgentStatus | None = None
