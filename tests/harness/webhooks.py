"""A real HTTPS hook webhook for tests: its own CA (trustme), answering ``HookReview``s as told
and keeping every request it was sent."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import web
from cadre.localcluster.node.network import NODE_IP


@dataclass
class Webhook:
    url: str
    ca_bundle: str
    answers: dict[str, Any] = field(default_factory=dict)
    """By point: ``allow``, ``deny``, ``500`` (allow when not listed)."""
    deny_containing: str | None = None
    """Deny any request whose input holds this text, whatever the point."""
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serve_webhook() -> AsyncIterator[Webhook]:
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # Also valid at the node's address, where pods with a network of their own reach it.
    ca.issue_cert("127.0.0.1", NODE_IP).configure_cert(served)
    state: dict[str, Webhook] = {}

    async def review(request: web.Request) -> web.Response:
        body = await request.json()
        hook = state["hook"]
        hook.requests.append(body)
        answer = hook.answers.get(body["request"]["point"], "allow")
        given = json.dumps(body["request"].get("input"))
        if hook.deny_containing is not None and hook.deny_containing in given:
            answer = "deny"
        if answer == "500":
            return web.Response(status=500, text="broken")
        response = {"uid": body["request"]["uid"], "allowed": answer == "allow"}
        if answer == "deny":
            response["status"] = {"message": "the change board says no"}
        return web.json_response({"apiVersion": "cadre.dev/v1alpha1", "kind": "HookReview",
                                  "response": response})  # fmt: skip

    app = web.Application()
    app.router.add_post("/review", review)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    port = runner.addresses[0][1]
    state["hook"] = Webhook(f"https://127.0.0.1:{port}/review",
                            base64.b64encode(ca.cert_pem.bytes()).decode())  # fmt: skip
    try:
        yield state["hook"]
    finally:
        await runner.cleanup()
