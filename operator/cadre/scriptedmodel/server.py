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
from cadre.scriptedmodel.context import (
    COMPACT_BETA,
    COMPACTION_MODELS,
    CONTEXT_MANAGEMENT_BETA,
    DEFAULT_COMPACTION_TRIGGER,
    CacheUsage,
    PromptCache,
    clear_tool_uses,
    prompt_blocks,
    prompt_too_long,
    tokens,
    visible_messages,
    window_of,
)
from cadre.scriptedmodel.scenario import (
    InjectedError,
    Reply,
    Scenario,
    ScenarioError,
    choose,
    conversation_key,
    first_message,
    summary_of,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _usage(usage: CacheUsage) -> Obj:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
    }


def _error(status: int, message: str, kind: str = "") -> web.Response:
    body = {
        "type": "error",
        "error": {"type": kind or _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    # The SDK honours retry-after-ms: retries stay fast in tests.
    headers = {"retry-after-ms": "10"} if status in (429, 500, 529) else {}
    return web.json_response(body, status=status, headers=headers)


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
    cache: PromptCache = field(default_factory=PromptCache)

    def __post_init__(self) -> None:
        self.cache.min_tokens = self.scenario.min_cacheable_tokens

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
        blocks = prompt_blocks(body, visible_messages(body["messages"]))
        return web.json_response({"input_tokens": sum(b.tokens for b in blocks)})

    def _edits(self, request: web.Request, body: Obj) -> tuple[Obj | None, Obj | None]:
        """The request's compaction and tool-result-clearing edits, refused as the API
        refuses them: without their beta header, on a model without compaction, with a
        trigger under the minimum."""
        betas = {b.strip() for b in request.headers.get("anthropic-beta", "").split(",")}
        management = body.get("context_management") or {}
        compact = clear = None
        for index, edit in enumerate(management.get("edits") or []):
            where = f"context_management.edits.{index}"
            kind = edit.get("type") if isinstance(edit, dict) else None
            if kind == "compact_20260112":
                if COMPACT_BETA not in betas:
                    raise _Refused(_error(400, f"{where}: {kind} needs the beta {COMPACT_BETA}"))
                if not str(body.get("model", "")).startswith(COMPACTION_MODELS):
                    message = f"{where}: {kind} is not supported on model {body.get('model')}"
                    raise _Refused(_error(400, message))
                trigger = (edit.get("trigger") or {}).get("value", DEFAULT_COMPACTION_TRIGGER)
                if int(trigger) < self.scenario.min_compaction_trigger:
                    minimum = self.scenario.min_compaction_trigger
                    raise _Refused(_error(400, f"{where}.trigger.value: must be >= {minimum}"))
                compact = edit
            elif kind == "clear_tool_uses_20250919":
                if not betas & {CONTEXT_MANAGEMENT_BETA, COMPACT_BETA}:
                    message = f"{where}: {kind} needs the beta {CONTEXT_MANAGEMENT_BETA}"
                    raise _Refused(_error(400, message))
                clear = edit
            else:
                raise _Refused(_error(400, f"{where}.type: unknown edit {kind!r}"))
        return compact, clear

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self.arrivals.append(time.time())
        self.requests.append(body)
        compact, clear = self._edits(request, body)
        try:
            _, step, reply = choose(self.scenario, body)
            key = (conversation_key(body), step)
        except ScenarioError as err:
            return _error(400, f"scripted model: {err}")
        served = self._errors_served[key]
        cut: InjectedError | None = None
        if served < len(reply.fail_first):
            self._errors_served[key] += 1
            injected = reply.fail_first[served]
            if injected.cut_stream_after is None:
                return _error(injected.status, injected.message, injected.type)
            cut = injected
        if reply.delay_seconds or self.scenario.latency_seconds:
            await asyncio.sleep(reply.delay_seconds + self.scenario.latency_seconds)
        message = self._message(body, step, reply, key[0], compact, clear)
        if body.get("stream"):
            return await self._stream(request, message, cut)
        if cut is not None and request.transport is not None:
            request.transport.abort()  # no response at all: the connection drops
        return web.json_response(message)

    def _message(
        self, body: Obj, step: int, reply: Reply, conversation: str,
        compact: Obj | None, clear: Obj | None,
    ) -> Obj:  # fmt: skip
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
        now = time.monotonic()
        model = str(body.get("model", "scripted"))
        window = window_of(model, self.scenario.context_windows)
        messages = visible_messages(body["messages"])
        blocks = prompt_blocks(body, messages)
        total = sum(b.tokens for b in blocks)
        applied: list[Obj] = []
        if clear is not None and total >= int((clear.get("trigger") or {}).get("value", 100_000)):
            keep = int((clear.get("keep") or {}).get("value", 3))
            least = int((clear.get("clear_at_least") or {}).get("value", 0))
            edited, cleared = clear_tool_uses(messages, keep, set(clear.get("exclude_tools") or []))
            edited_blocks = prompt_blocks(body, edited)
            saved = total - sum(b.tokens for b in edited_blocks)
            if cleared and saved >= least:  # below clear_at_least nothing is touched
                messages, blocks, total = edited, edited_blocks, total - saved
                applied.append({"type": "clear_tool_uses_20250919", "cleared_tool_uses": cleared,
                                "cleared_input_tokens": saved})  # fmt: skip
        if total > window:
            raise _Refused(_error(400, prompt_too_long(total, window)))
        iterations: list[Obj] = []
        trigger = int(
            ((compact or {}).get("trigger") or {}).get("value", DEFAULT_COMPACTION_TRIGGER)
        )
        stop: str = reply.stop()
        if compact is not None and total >= trigger:
            # The API summarises the context, then answers from the summary alone.
            summary = summary_of(body)
            block = {"type": "compaction", "content": summary}
            spent = self.cache.use(blocks, now)
            iterations.append(
                {"type": "compaction", **_usage(spent), "output_tokens": tokens(summary)}
            )
            blocks = prompt_blocks(body, [{"role": "assistant", "content": [block]}])
            content = [block, *([] if compact.get("pause_after_compaction") else content)]
            stop = "compaction" if compact.get("pause_after_compaction") else stop
        usage = self.cache.use(blocks, now)
        output = reply.output_tokens or tokens(content)
        if usage.total + output > window:
            # The answer runs into the window: cut it there (its tool calls never complete).
            room = max(window - usage.total, 0)
            content = [{**b, "text": b["text"][: room * 4]} for b in content if b["type"] == "text"]
            output, stop = room, "model_context_window_exceeded"
        if iterations:
            iterations.append({"type": "message", **_usage(usage), "output_tokens": output})
        message: Obj = {
            "id": f"msg_{seed[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**_usage(usage), "output_tokens": output},
        }
        if iterations:
            message["usage"]["iterations"] = iterations
        if applied:
            message["context_management"] = {"applied_edits": applied}
        return message

    async def _stream(
        self, request: web.Request, message: Obj, cut: InjectedError | None = None
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        budget = [cut.cut_stream_after if cut is not None and cut.cut_stream_after else 10**9]

        class _Cut(Exception):  # noqa: N818 - the injected cut: stop writing
            pass

        async def send(event: str, data: Obj) -> None:
            if budget[0] <= 0:
                raise _Cut
            budget[0] -= 1
            await response.write(
                f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()
            )

        try:
            await self._events(message, send)
        except _Cut:
            if request.transport is not None:
                request.transport.abort()  # the connection drops mid-response
        return response

    @staticmethod
    async def _events(message: Obj, send: Any) -> None:
        usage = {k: v for k, v in message["usage"].items() if k != "iterations"}
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}  # fmt: skip
        start.pop("context_management", None)
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
            elif block["type"] == "compaction":
                await send("content_block_start", {"index": index,
                           "content_block": {"type": "compaction", "content": None}})  # fmt: skip
                await send("content_block_delta", {"index": index, "delta": {
                    "type": "compaction_delta", "content": block["content"]}})  # fmt: skip
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
        delta: Obj = {
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        }
        if "iterations" in message["usage"]:
            delta["usage"]["iterations"] = message["usage"]["iterations"]
        if "context_management" in message:
            delta["context_management"] = message["context_management"]
        await send("message_delta", delta)
        await send("message_stop", {})
