"""The ``Team`` kind: Agents that delegate to each other and review each other's work."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cadre.api.cel import CelRule
from cadre.api.meta import (
    ApiModel,
    Condition,
    ObjectName,
    conditions_field,
)

MAX_MEMBERS = 32
MAX_EDGES = 16


class TeamMember(ApiModel):
    """An Agent on the team and the teammates it may hand work to."""

    cel_rules = (
        CelRule(
            rule="!self.delegatesTo.exists(d, d == self.agent)",
            message="a member cannot delegate to itself",
            field_path=".delegatesTo",
        ),
    )

    agent: ObjectName
    """The Agent's name (same namespace)."""
    delegates_to: list[ObjectName] = Field(
        default_factory=list,
        max_length=MAX_EDGES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Members this one may delegate to. Empty: it does the work itself."""


class Delegation(ApiModel):
    """Bounds on delegation, enforced by the operator whatever the model asks."""

    max_depth: Annotated[int, Field(ge=1, le=10)] = 3
    """Levels below the top-level Task (1: the lead may delegate, its delegates may not)."""
    max_children_per_task: Annotated[int, Field(ge=1, le=100)] = 10
    """Child Tasks one Task may create over its life."""
    max_concurrent_children: Annotated[int, Field(ge=1, le=100)] = 5
    """Child Tasks of one Task unfinished at the same time."""


class Review(ApiModel):
    """How deliverables are inspected before they are accepted.

    By default the agent that placed a request reviews what comes back: it accepts the result
    or sends it back with feedback, which reopens the child's session.
    """

    reviewer: ObjectName | None = None
    """A member that inspects every deliverable before it reaches the requester."""
    max_rounds: Annotated[int, Field(ge=1, le=10)] = 3
    """Rounds of requested changes before the child Task ends Failed."""
    human_approval: bool = False
    """Top-level Tasks wait ``InReview`` for ``cadre approve`` or ``cadre reject``."""


class TeamSpec(ApiModel):
    """The desired state of a Team."""

    cel_rules = (
        CelRule(
            rule="self.members.exists(m, m.agent == self.lead)",
            message="spec.lead must be one of spec.members",
            field_path=".lead",
        ),
        CelRule(
            rule="self.members.all(m, m.delegatesTo.all(d, self.members.exists(o, o.agent == d)))",
            message="every spec.members[].delegatesTo entry must name a member of the team",
            field_path=".members",
        ),
        CelRule(
            rule="!has(self.review) || !has(self.review.reviewer) || "
            "self.members.exists(m, m.agent == self.review.reviewer)",
            message="spec.review.reviewer must be one of spec.members",
            field_path=".review.reviewer",
        ),
    )

    lead: ObjectName
    """The member that receives Tasks assigned to the team."""
    members: list[TeamMember] = Field(
        min_length=1,
        max_length=MAX_MEMBERS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["agent"],
        },
    )
    """The team's Agents, the lead included, with who may delegate to whom."""
    delegation: Delegation = Field(default_factory=Delegation)
    """Depth and fan-out bounds."""
    review: Review = Field(default_factory=Review)
    """How deliverables are reviewed."""


class TeamStatus(ApiModel):
    """The observed state of a Team."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` the operator last acted on."""
    conditions: list[Condition] = conditions_field()
    """``Ready``: every member Agent exists and is Ready (the reason names one that is not)."""
    members: Annotated[int, Field(ge=0)] = 0
    """Members listed."""
    ready_members: Annotated[int, Field(ge=0)] = 0
    """Members whose Agent is Ready."""


class Team(ApiModel):
    """Agents working as an organization."""

    api_version: Literal["cadre.dev/v1alpha1"] = "cadre.dev/v1alpha1"
    kind: Literal["Team"] = "Team"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: TeamSpec
    status: TeamStatus | None = None
