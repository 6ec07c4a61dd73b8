"""Cadre's API types (group ``cadre.dev``, version ``v1alpha1``): the single source of truth.

The pydantic models here are what the operator, the harness and the CLI parse specs into, and
what ``make crds`` turns into the CustomResourceDefinitions in ``crds/``. This package imports
nothing else of Cadre, so every other layer can depend on it.
"""

from cadre.api.agent import Agent, AgentSpec, AgentStatus
from cadre.api.meta import GROUP, VERSION, Condition
from cadre.api.task import Task, TaskPhase, TaskSpec, TaskStatus
from cadre.api.team import Team, TeamSpec, TeamStatus

__all__ = [
    "GROUP",
    "VERSION",
    "Agent",
    "AgentSpec",
    "AgentStatus",
    "Condition",
    "Task",
    "TaskPhase",
    "TaskSpec",
    "TaskStatus",
    "Team",
    "TeamSpec",
    "TeamStatus",
]
