"""The typed views of raw bodies name exactly the fields of the models they mirror."""

from __future__ import annotations

from cadre.api.task import SessionStatus
from cadre.api.types import SessionFields, session_of


def test_the_session_view_names_every_field_of_the_session_model() -> None:
    aliases = {f.alias or name for name, f in SessionStatus.model_fields.items()}
    assert set(SessionFields.__annotations__) == aliases


def test_a_status_without_a_session_reads_as_an_empty_one() -> None:
    assert session_of(None) == {}
    assert session_of({"phase": "Pending"}) == {}
    assert session_of({"session": {"sandboxReady": True}}) == {"sandboxReady": True}
