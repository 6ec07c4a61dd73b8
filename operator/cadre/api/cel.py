"""CEL rules as Kubernetes uses them in ``x-kubernetes-validations``, evaluated with cel-python.

One declaration of a rule serves twice: it is written into the CRD (the API server enforces it)
and evaluated by the pydantic models (the operator and the CLI enforce it before any request).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry."""

    rule: str
    """The CEL expression; ``self`` is the value at the schema node, ``oldSelf`` the stored one."""
    message: str
    """What the user reads when the rule fails; names the fields involved."""
    field_path: str | None = None
    """Where the error is reported, relative to the node (for example ``.members``)."""

    @property
    def is_transition(self) -> bool:
        """Transition rules compare with the stored object, so they apply only to updates."""
        return "oldSelf" in self.rule

    def to_crd(self) -> dict[str, str]:
        """The rule as it appears in a CRD schema."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class CelCompileError(ValueError):
    """A rule that is not valid CEL."""


@functools.cache
def _environment() -> celpy.Environment:
    return celpy.Environment()


@functools.cache
def compile_rule(rule: str) -> Any:
    """Compile a rule once; later calls reuse the program."""
    env = _environment()
    try:
        return env.program(env.compile(rule))
    except CELParseError as err:
        raise CelCompileError(f"invalid CEL rule {rule!r}: {err}") from err


def evaluate(rule: str, value: Any, old_value: Any = None) -> bool | str:
    """Evaluate ``rule`` on a JSON value; True when it holds, False when not, or an error text.

    Kubernetes reports a rule whose evaluation fails (a missing field without ``has()``, a type
    error) as a validation error too, so callers treat a string like False.
    """
    activation: dict[str, Any] = {"self": json_to_cel(value)}
    if old_value is not None:
        activation["oldSelf"] = json_to_cel(old_value)
    result = compile_rule(rule).evaluate(activation)
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    if isinstance(result, bool):
        return result
    return f"rule {rule!r} did not evaluate to a bool: {result}"
