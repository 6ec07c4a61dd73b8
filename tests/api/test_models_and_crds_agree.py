"""The models and the CRDs are one API: same defaults, same verdicts, the examples valid."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cadre.api import Agent, Task, Team
from cadre.api.cel import compile_rule
from cadre.api.crd import KINDS, build_crd
from cadre.api.meta import ApiModel
from cadre.api.policy import Policy
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.api.conftest import crd_schema, example_objects
from tests.api.crdcheck import crd_defaulted, crd_errors
from tests.api.test_crds_are_valid import walk

MODELS: dict[str, type[ApiModel]] = {"Agent": Agent, "Team": Team, "Task": Task,
                                      "Policy": Policy}  # fmt: skip
EXAMPLES = example_objects()


def test_there_are_examples_of_every_kind() -> None:
    assert {obj["kind"] for obj in EXAMPLES} == set(MODELS)


@pytest.mark.parametrize("obj", EXAMPLES, ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_examples_are_valid_both_ways(
    obj: dict[str, Any], crds_by_kind: dict[str, dict[str, Any]]
) -> None:
    MODELS[obj["kind"]].model_validate(obj)
    assert crd_errors(crds_by_kind[obj["kind"]], obj) == []


@pytest.mark.parametrize("obj", EXAMPLES, ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_the_api_server_defaults_what_the_models_default(
    obj: dict[str, Any], crds_by_kind: dict[str, dict[str, Any]]
) -> None:
    from_models = MODELS[obj["kind"]].model_validate(obj).to_json()["spec"]
    from_crd = crd_defaulted(crds_by_kind[obj["kind"]], obj)["spec"]
    assert from_crd == from_models


@pytest.mark.parametrize("info", KINDS, ids=lambda i: i.kind)
def test_every_cel_rule_compiles(info: Any) -> None:
    rules = [
        rule["rule"]
        for _, node in walk(crd_schema(build_crd(info)))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert rules, "each kind has cross-field rules"
    for rule in rules:
        compile_rule(rule)


def verdicts(kind: str, obj: dict[str, Any], crds: dict[str, dict[str, Any]]) -> tuple[bool, bool]:
    try:
        MODELS[kind].model_validate(obj)
        model_ok = True
    except ValidationError:
        model_ok = False
    return model_ok, crd_errors(crds[kind], obj) == []


TASK: dict[str, Any] = {
    "apiVersion": "cadre.dev/v1alpha1",
    "kind": "Task",
    "metadata": {"name": "t"},
    "spec": {"assignee": {"agent": "a"}, "prompt": "p"},
}


@settings(max_examples=150, deadline=None)
@given(
    max_turns=st.integers(min_value=-5, max_value=10_005),
    title=st.text(max_size=300),
    timeout=st.from_regex(r"\A[0-9a-z]{0,8}\Z"),
    agent=st.one_of(st.none(), st.from_regex(r"\A[a-zA-Z0-9.-]{0,12}\Z")),
    team=st.one_of(st.none(), st.just("team-a")),
)
def test_models_and_crd_agree_on_arbitrary_task_specs(
    crds_by_kind: dict[str, dict[str, Any]],
    max_turns: int,
    title: str,
    timeout: str,
    agent: str | None,
    team: str | None,
) -> None:
    obj = copy.deepcopy(TASK)
    obj["spec"]["title"] = title
    obj["spec"]["limits"] = {"maxTurns": max_turns, "timeout": timeout}
    obj["spec"]["assignee"] = {k: v for k, v in {"agent": agent, "team": team}.items() if v}
    model_ok, crd_ok = verdicts("Task", obj, crds_by_kind)
    assert model_ok == crd_ok, obj
