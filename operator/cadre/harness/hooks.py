"""Policy hooks: what each kind answers, pure where it can be (CEL, the webhook's request and
the reading of its answer) and the webhook's HTTPS call. The session decides when hooks run and
logs each answer (``agent.hook``) before acting on it, so a resumed session never asks twice
(docs/control.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from celpy import celtypes
from celpy.adapter import CELJSONEncoder, json_to_cel

from cadre.api.cel import CelCompileError, compile_rule
from cadre.api.meta import GROUP, VERSION
from cadre.api.policy import FailurePolicy, Hook, HookPoint
from cadre.api.types import Obj
from cadre.harness.tls import trusting  # a bad caBundle raises a ValueError: a failure

MAX_MESSAGE = 4096
"""What a hook's message may add to the conversation (the tail of a command's output)."""


@dataclass(frozen=True)
class HookAnswer:
    """One hook's answer at one point."""

    allowed: bool
    message: str = ""
    input: Obj | None = None
    """BeforeToolCall: the call's input as the hook rewrote it."""
    note: str = ""
    """AfterToolCall: a note appended to the tool's result for the model."""
    failure: str = ""
    """Why the hook could not answer (an invalid expression, an unreachable webhook); under
    ``failurePolicy: Ignore`` the answer is then a yes."""

    def to_event(self) -> Obj:
        event: Obj = {"allowed": self.allowed, "message": self.message[:MAX_MESSAGE]}
        if self.input is not None:
            event["input"] = self.input
        if self.note:
            event["note"] = self.note[:MAX_MESSAGE]
        if self.failure:
            event["failure"] = self.failure[:MAX_MESSAGE]
        return event


def _to_json(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=CELJSONEncoder))


def evaluate_cel(hook: Hook, point: HookPoint, variables: Obj) -> HookAnswer:
    """The CEL hook's answer: ``true`` yes; ``false`` no (with the hook's message); a map at
    BeforeToolCall the new input; a string at AfterToolCall a note. Anything else, and any
    error, is a no naming why: a hook that cannot decide must not let a call through."""
    assert hook.cel is not None
    message = hook.cel.message or f"hook {hook.name} said no"
    try:
        result = compile_rule(hook.cel.expression).evaluate(
            {name: json_to_cel(value) for name, value in variables.items()}
        )
    except CelCompileError as err:
        return HookAnswer(False, f"hook {hook.name} has an invalid expression: {err}",
                          failure=str(err))  # fmt: skip
    except Exception as err:  # celpy raises its own and Python's errors alike
        return _cel_error(hook, err)
    if isinstance(result, Exception):  # celpy returns some evaluation errors as values
        return _cel_error(hook, result)
    if isinstance(result, celtypes.BoolType | bool):
        return HookAnswer(bool(result), "" if result else message)
    if point == HookPoint.BEFORE_TOOL_CALL and isinstance(result, celtypes.MapType):
        return HookAnswer(True, input=_to_json(result))
    if point == HookPoint.AFTER_TOOL_CALL and isinstance(result, celtypes.StringType):
        return HookAnswer(True, note=str(result))
    kind = type(result).__name__.removesuffix("Type").lower()
    why = f"hook {hook.name}'s expression gave a {kind}, which {point.value} cannot use"
    return HookAnswer(False, why, failure=why)


def _cel_error(hook: Hook, err: BaseException) -> HookAnswer:
    why = f"hook {hook.name}'s expression failed: {' '.join(str(err).split())[:300]}"
    return HookAnswer(False, why, failure=why)


def command_answer(content: str, is_error: bool) -> HookAnswer:
    """A command hook's answer from its bash result: exit code 0 is a yes."""
    if not is_error:
        return HookAnswer(True)
    return HookAnswer(False, content[-MAX_MESSAGE:])


def review_request(uid: str, hook: Hook, policy: str, point: HookPoint, variables: Obj) -> Obj:
    """The ``HookReview`` a webhook receives (modelled on admission.k8s.io's AdmissionReview:
    ``uid`` is stable for one hook at one call, so a receiver can tell a repeat)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HookReview",
        "request": {
            "uid": uid,
            "point": point.value,
            "policy": policy,
            "hook": hook.name,
            **variables,
        },
    }


class WebhookError(Exception):
    """The webhook did not answer usably."""


def read_review(body: Any, uid: str, point: HookPoint) -> HookAnswer:
    """The answer in a webhook's ``HookReview`` response; WebhookError when there is none."""
    response = body.get("response") if isinstance(body, dict) else None
    if not isinstance(response, dict):
        raise WebhookError("the answer has no response object")
    if response.get("uid") != uid:
        raise WebhookError(f"the answer's response.uid is not {uid!r}")
    allowed = response.get("allowed")
    if not isinstance(allowed, bool):
        raise WebhookError("the answer's response.allowed is not a boolean")
    status = response.get("status")
    message = status.get("message") if isinstance(status, dict) else None
    message = str(message or "")
    new_input = response.get("input")
    if new_input is not None and (point != HookPoint.BEFORE_TOOL_CALL
                                  or not isinstance(new_input, dict)):  # fmt: skip
        raise WebhookError("response.input must be an object, and only at BeforeToolCall")
    note = response.get("note")
    if note is not None and (point != HookPoint.AFTER_TOOL_CALL or not isinstance(note, str)):
        raise WebhookError("response.note must be a string, and only at AfterToolCall")
    return HookAnswer(allowed, message, new_input if allowed else None, note or "")


async def call_webhook(hook: Hook, request: Obj, point: HookPoint) -> HookAnswer:
    """POST the request and read the answer; a failure is a no under ``Fail`` and a yes under
    ``Ignore``, with why either way."""
    webhook = hook.webhook
    assert webhook is not None
    if not webhook.url.startswith("https://"):  # the schema refuses it; never send it anyway
        return HookAnswer(False, f"hook {hook.name}'s url is not HTTPS", failure="not HTTPS")
    uid = str(request["request"]["uid"])
    try:
        timeout = aiohttp.ClientTimeout(total=webhook.timeout_seconds)
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.post(
                webhook.url, json=request, ssl=trusting(webhook.ca_bundle), allow_redirects=False
            ) as reply,  # fmt: skip
        ):
            if reply.status != 200:
                raise WebhookError(f"HTTP {reply.status}")
            body = await reply.json(content_type=None)
        return read_review(body, uid, point)
    except (
        WebhookError,
        aiohttp.ClientError,
        TimeoutError,
        ValueError,
        OSError,
    ) as err:
        why = f"webhook {hook.name} failed: {type(err).__name__}: {err}"[:MAX_MESSAGE]
        if webhook.failure_policy == FailurePolicy.IGNORE:
            return HookAnswer(True, failure=why)
        return HookAnswer(False, why, failure=why)
