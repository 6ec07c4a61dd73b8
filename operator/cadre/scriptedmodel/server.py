"""The scripted model's HTTP server: ``POST /v1/messages`` (JSON or SSE streaming, as the
``anthropic`` SDK reads them), ``POST /v1/messages/count_tokens``, and
``GET /_scripted/requests`` (what it was asked, for tests) and ``GET /_scripted/arrivals``
(when each request came, for benchmarks)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cadre.api.types import Obj
from cadre.scriptedmodel.scenario import (
    Reply,
    Scenario,
    ScenarioError,
    choose,
    conversation_key,
    first_message,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _error(status: int, message: str, kind: str = "") -> web.Response:
    body = {
        "type": "error",
        "error": {"type": kind or _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    # The SDK honours retry-after-ms: retries stay fast in tests.
    headers = {"retry-after-ms": "10"} if status in (429, 500, 529) else {}
    return web.json_response(body, status=status, headers=headers)


def _tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, separators=(",", ":"))) // 4)


def _has_cache_marker(value: Any) -> bool:
    return "cache_control" in json.dumps(value)


class _Refused(Exception):  # noqa: N818 - carries the response that refuses the request
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


@web.middleware
async def _refusals(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _Refused as refused:
        return refused.response
    return response


@dataclass
class ScriptedModel:
    scenario: Scenario
    requests: list[Obj] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    """Wall-clock time each request in ``requests`` arrived (benchmarks time first tokens)."""
    _errors_served: Counter[tuple[str, int]] = field(default_factory=Counter)
    _cached_prefixes: set[str] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024, middlewares=[_refusals])
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/_scripted/requests", self._recorded)
        app.router.add_get("/_scripted/arrivals", self._arrivals)
        return app

    async def _recorded(self, _: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _arrivals(self, _: web.Request) -> web.Response:
        """When each request arrived, with its first user message (which Task it was)."""
        return web.json_response(
            [
                {"time": at, "prompt": first_message(body)}
                for at, body in zip(self.arrivals, self.requests, strict=True)
            ]
        )

    async def _body(self, request: web.Request) -> Obj:
        if not request.headers.get("x-api-key") and not request.headers.get("Authorization"):
            raise _Refused(_error(401, "x-api-key header is required"))
        try:
            body = await request.json()
        except ValueError as err:
            raise _Refused(_error(400, f"invalid JSON: {err}")) from err
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise _Refused(_error(400, "messages: Field required"))
        return body

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        return web.json_response(
            {"input_tokens": _tokens([body.get("system"), body.get("tools"), body["messages"]])}
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self.arrivals.append(time.time())
        self.requests.append(body)
        try:
            agent, step, reply = choose(self.scenario, body)
            key = (conversation_key(body), step)
        except ScenarioError as err:
            return _error(400, f"scripted model: {err}")
        served = self._errors_served[key]
        if served < len(reply.fail_first):
            self._errors_served[key] += 1
            injected = reply.fail_first[served]
            return _error(injected.status, injected.message, injected.type)
        if reply.delay_seconds:
            await asyncio.sleep(reply.delay_seconds)
        message = self._message(body, agent, step, reply, key[0])
        if body.get("stream"):
            return await self._stream(request, message)
        return web.json_response(message)

    def _message(self, body: Obj, agent: str, step: int, reply: Reply, conversation: str) -> Obj:
        seed = hashlib.sha256(f"{conversation}|{step}".encode()).hexdigest()
        content: list[Obj] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for index, tool in enumerate(reply.tool_uses):
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{seed[:20]}{index:02d}",
                    "name": tool.name,
                    "input": tool.input,
                }
            )
        prefix = [body.get("system"), body.get("tools")]
        prefix_tokens = _tokens(prefix) if _has_cache_marker(prefix) else 0
        prefix_key = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()
        created = read = 0
        if prefix_tokens:
            if prefix_key in self._cached_prefixes:
                read = prefix_tokens
            else:
                created = prefix_tokens
                self._cached_prefixes.add(prefix_key)
        total = _tokens([body.get("system"), body.get("tools"), body["messages"]])
        return {
            "id": f"msg_{seed[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "scripted"),
            "content": content,
            "stop_reason": reply.stop(),
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(total - prefix_tokens, 1),
                "output_tokens": reply.output_tokens or _tokens(content),
                "cache_creation_input_tokens": created,
                "cache_read_input_tokens": read,
            },
        }

    async def _stream(self, request: web.Request, message: Obj) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(event: str, data: Obj) -> None:
            await response.write(
                f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()
            )

        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await send("message_start", {"message": start})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                await send(
                    "content_block_start",
                    {"index": index, "content_block": {"type": "text", "text": ""}},
                )
                text = block["text"]
                for offset in range(0, len(text), 40):
                    await send(
                        "content_block_delta",
                        {
                            "index": index,
                            "delta": {"type": "text_delta", "text": text[offset : offset + 40]},
                        },
                    )
            else:
                await send(
                    "content_block_start", {"index": index, "content_block": {**block, "input": {}}}
                )
                raw = json.dumps(block["input"])
                for offset in range(0, len(raw), 40):
                    await send(
                        "content_block_delta",
                        {
                            "index": index,
                            "delta": {
                                "type": "input_json_delta",
                                "partial_json": raw[offset : offset + 40],
                            },
                        },
                    )
            await send("content_block_stop", {"index": index})
        await send(
            "message_delta",
            {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        await send("message_stop", {})
        return response
