"""The counts an Agent's status shows (``kubectl get agents``: Active, Queued; and how many
memory entries it has), from what the operator already watches (pure)."""

from __future__ import annotations

from collections.abc import Iterable

import yaml


def agent_counts(phases: Iterable[str], memory_entries: int) -> dict[str, int]:
    """``activeTasks``: sessions working now (each holds one of ``maxConcurrentTasks``);
    ``queuedTasks``: Tasks accepted for it that no session has taken up yet (waiting for a
    free slot). Tasks waiting on delegated work or in review hold no slot and count in
    neither."""
    listed = list(phases)
    return {
        "activeTasks": sum(1 for p in listed if p == "Running"),
        "queuedTasks": sum(1 for p in listed if p == "Pending"),
        "memoryEntries": memory_entries,
    }


def memory_size(text: str) -> int | None:
    """Entries in a memory ConfigMap's ``entries.yaml``; None when it is not a list (someone
    broke it by hand: the harness reports that, the count is just left as it was)."""
    try:
        data = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError:
        return None
    return len(data) if isinstance(data, list) else None
