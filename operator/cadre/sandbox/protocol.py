"""The sandbox's wire protocol: tool schemas, input checks, limits, error types and the names
of its settings. Standard library only and free of side effects, so the harness (which offers
these tools to the model and checks deliverable patterns) imports this module and nothing that
runs processes, and the operator builds sandbox pods from the same names the server reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

DEFAULT_PORT = 8080
"""Where the sandbox server listens (``CADRE_SANDBOX_PORT``)."""
DEFAULT_WORKSPACE = "/workspace"
TOKEN_DIR = "/var/run/cadre/token"  # noqa: S105 - a path, not a secret
TOKEN_KEY = "token-sha256"  # noqa: S105 - a key name
DEFAULT_TOKEN_DIGEST_FILE = f"{TOKEN_DIR}/{TOKEN_KEY}"
"""Where the sandbox reads the digest of its session token (a Secret volume in a pod)."""
ENV_HOST = "CADRE_SANDBOX_HOST"
ENV_PORT = "CADRE_SANDBOX_PORT"
ENV_WORKSPACE = "CADRE_WORKSPACE"
ENV_TOKEN_SHA256 = "CADRE_SANDBOX_TOKEN_SHA256"  # noqa: S105 - a variable's name
ENV_TOKEN_SHA256_FILE = "CADRE_SANDBOX_TOKEN_SHA256_FILE"  # noqa: S105 - a variable's name
ENV_STATE_DIR = "CADRE_SANDBOX_STATE_DIR"
ENV_GREP_TIMEOUT = "CADRE_SANDBOX_GREP_TIMEOUT_SECONDS"
ENV_EXTRA_CA = "CADRE_SANDBOX_EXTRA_CA"
"""A CA certificate file tools must trust besides the system's (the Agent's egress CA)."""
CA_BUNDLE_VARIABLES = (
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
)  # fmt: skip
"""Where pip, requests, git, curl, Node and OpenSSL-based tools look for trusted CAs."""
PROXY_VARIABLES = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
)
"""What a tool call's ``environment`` may set (the harness's egress proxy, per call: the
harness's address can change while a sandbox lives)."""

MAX_OUTPUT_CHARS = 30_000
"""Per stream; what the model reads back has to fit in its context."""
MAX_READ_BYTES = 256 * 1024
MAX_WRITE_BYTES = 10 * 1024 * 1024
MAX_TIMEOUT_SECONDS = 600
DEFAULT_TIMEOUT_SECONDS = 120
DEFAULT_GREP_TIMEOUT_SECONDS = 30
"""What one grep may cost at most (``CADRE_SANDBOX_GREP_TIMEOUT_SECONDS``)."""
MAX_MATCHES = 2000
BINARY_SNIFF_BYTES = 8192
STATE_DIR_NAME = ".cadre-sandbox"
"""Where the sandbox keeps its own records inside the workspace; tools skip it."""


class ToolInputError(Exception):
    """Bad input: nothing ran. ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_input") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def check_environment(value: Any) -> dict[str, str]:
    """A tool call's ``environment``: proxy variables only, as strings (pure)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ToolInputError("environment: must be an object of variable names to strings")
    for key, item in value.items():
        if key not in PROXY_VARIABLES:
            raise ToolInputError(
                f"environment.{key}: only {', '.join(sorted(PROXY_VARIABLES))} may be set"
            )
        if not isinstance(item, str) or len(item) > 2048 or "\x00" in item:
            raise ToolInputError(f"environment.{key}: must be a string of at most 2048 chars")
    return dict(value)


@dataclass(frozen=True)
class ToolResult:
    """What a tool produced: text for the model plus structured details for programs."""

    content: str
    is_error: bool = False
    details: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"content": self.content, "is_error": self.is_error, "details": self.details or {}}


# --- input schemas: the harness sends these to the model verbatim -----------------------------

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "bash": {
        "description": "Run a bash command in the workspace. Returns exit code, stdout and "
        "stderr (each cut at 30,000 characters). The whole process group is killed at the "
        "timeout.",
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "maxLength": 100_000},
                "timeout": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TIMEOUT_SECONDS,
                    "description": f"Seconds, default {DEFAULT_TIMEOUT_SECONDS}.",
                },
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    },
    "read": {
        "description": "Read a text file with line numbers. Paths are relative to the "
        "workspace. Use offset and limit for long files.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 4096},
                "offset": {"type": "integer", "minimum": 1, "description": "First line, 1-based."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100_000},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
    "write": {
        "description": "Create or overwrite a file (parent folders are created).",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 4096},
                "content": {"type": "string"},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    },
    "edit": {
        "description": "Replace an exact string in a file. Fails if the string is missing, or "
        "appears more than once and replace_all is not set.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 4096},
                "old_string": {"type": "string", "minLength": 1},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"},
            },
            "required": ["path", "old_string", "new_string"],
            "additionalProperties": False,
        },
    },
    "glob": {
        "description": "List files matching a glob pattern such as '**/*.py', newest first.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "maxLength": 1024},
                "path": {"type": "string", "maxLength": 4096, "description": "Base folder."},
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
    },
    "grep": {
        "description": "Search file contents with a regular expression (Python syntax). "
        "Returns path:line:text.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "maxLength": 4096},
                "path": {"type": "string", "maxLength": 4096},
                "glob": {"type": "string", "maxLength": 1024, "description": "File filter."},
                "case_insensitive": {"type": "boolean"},
                "max_results": {"type": "integer", "minimum": 1, "maximum": MAX_MATCHES},
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
    },
}

_PY_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "boolean": bool}


def check_input(tool: str, data: Any) -> dict[str, Any]:
    """Validate ``data`` against the tool's input schema; the error names the field."""
    if tool not in TOOL_SCHEMAS:
        known = ", ".join(sorted(TOOL_SCHEMAS))
        raise ToolInputError(
            f"name: unknown tool {tool!r}; known tools: {known}", 404, "unknown_tool"
        )
    schema = TOOL_SCHEMAS[tool]["input_schema"]
    if not isinstance(data, dict):
        raise ToolInputError("input: expected an object")
    for name in schema["required"]:
        if name not in data:
            raise ToolInputError(f"input.{name}: required")
    for name, value in data.items():
        spec = schema["properties"].get(name)
        if spec is None:
            raise ToolInputError(f"input.{name}: unknown field for tool {tool!r}")
        expected = _PY_TYPES[spec["type"]]
        if not isinstance(value, expected) or (
            spec["type"] == "integer" and isinstance(value, bool)
        ):
            raise ToolInputError(
                f"input.{name}: expected {spec['type']}, got {type(value).__name__}"
            )
        if isinstance(value, str) and len(value) > spec.get("maxLength", len(value)):
            raise ToolInputError(f"input.{name}: longer than {spec['maxLength']} characters")
        if isinstance(value, str) and len(value) < spec.get("minLength", 0):
            raise ToolInputError(f"input.{name}: must not be empty")
        out_of_range = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (value < spec.get("minimum", value) or value > spec.get("maximum", value))
        )
        if out_of_range:
            raise ToolInputError(
                f"input.{name}: must be between {spec.get('minimum')} and {spec.get('maximum')}"
            )
    return data


def check_pattern(pattern: Any, field: str) -> str:
    """A glob relative to the workspace that cannot leave it (pure)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ToolInputError(f"{field}: must be a non-empty string")
    if "\x00" in pattern:
        raise ToolInputError(f"{field}: contains a NUL byte")
    parts = PurePosixPath(pattern).parts
    if pattern.startswith("/") or ".." in parts:
        raise ToolInputError(f"{field}: must be relative to the workspace, without '..'")
    return pattern
