"""Running a Policy's hooks for a session, exactly once per hook and key: each answer is
logged (``agent.hook``) before it counts and read back from the log by a resumed session. What
each kind of hook answers is in ``hooks``; when hooks run, and what their answers do, is the
session's (docs/control.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cadre.api.policy import Hook, HookPoint
from cadre.api.types import Obj
from cadre.harness.hooks import (
    HookAnswer,
    call_webhook,
    command_answer,
    evaluate_cel,
    review_request,
)
from cadre.harness.logs import brief
from cadre.harness.permissions import Governance
from cadre.harness.replay import State
from cadre.harness.sandbox_client import SandboxClient, SandboxUnavailable
from cadre.harness.sessionlog import SessionLog


def refusal(answers: list[Obj]) -> Obj | None:
    """The answer that said no, if one did (``HookRunner.run`` stops at the first)."""
    return answers[-1] if answers and not answers[-1]["allowed"] else None


class HookRunner:
    def __init__(
        self,
        task: str,
        agent: str,
        log: SessionLog,
        sandbox: SandboxClient,
        state: Callable[[], State],
        say: Callable[[str], None],
    ) -> None:
        self.task = task
        """``namespace/name``."""
        self.agent = agent
        self.log = log
        self.sandbox = sandbox
        self.state = state
        """The session's state with every logged event folded in."""
        self.say = say

    def variables(self, governance: Governance) -> Obj:
        namespace, _, name = self.task.partition("/")
        return {"agent": {"name": self.agent, "labels": dict(governance.agent_labels)},
                "task": {"namespace": namespace, "name": name}}  # fmt: skip

    async def run(
        self, governance: Governance, point: HookPoint, key: str, variables: Obj, tool: str = ""
    ) -> list[Obj]:
        """The logged answers of the hooks at ``point`` for ``key`` (a call id, a delivery),
        in order, up to the first no. A BeforeToolCall rewrite is what the next hook sees."""
        answers: list[Obj] = []
        variables = {**self.variables(governance), **variables}
        for policy, hook in governance.hooks(point, tool):
            hook_id = f"{point.value}/{key}/{policy}/{hook.name}"
            logged = self.state().hooks.get(hook_id)
            if logged is None:
                answer = await self.ask(hook_id, policy, hook, point, variables)
                self.log.append("agent.hook", id=hook_id, key=key, point=point.value,
                                policy=policy, hook=hook.name, **answer.to_event())  # fmt: skip
                verdict = "yes" if answer.allowed else "no"
                self.say(f"   hook {policy}/{hook.name} ({point.value}): {verdict}"
                         + (f": {brief(answer.message)}" if answer.message else "")
                         + (" (input rewritten)" if answer.input is not None else ""))  # fmt: skip
                logged = self.state().hooks[hook_id]
            answers.append(logged)
            if not logged["allowed"]:
                break
            if logged.get("input") is not None:
                variables = {**variables, "input": logged["input"]}
        return answers

    async def ask(
        self, hook_id: str, policy: str, hook: Hook, point: HookPoint, variables: Obj
    ) -> HookAnswer:
        if hook.cel is not None:
            return evaluate_cel(hook, point, variables)
        if hook.command is not None:
            # Its own call id, derived from the hook's: the sandbox runs it once however often
            # a resumed harness asks.
            call_id = "hook_" + hashlib.sha256(hook_id.encode()).hexdigest()[:40]
            command = {"command": hook.command.command, "timeout": hook.command.timeout_seconds}
            try:
                outcome = await self.sandbox.call(call_id, "bash", command)
            except SandboxUnavailable as err:
                why = f"hook {hook.name} could not run: {err}"
                return HookAnswer(False, why, failure=why)
            return command_answer(outcome.content, outcome.is_error)
        request = review_request(f"{self.task}/{hook_id}", hook, policy, point, variables)
        return await call_webhook(hook, request, point)
