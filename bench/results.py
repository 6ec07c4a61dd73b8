"""The results file: a JSON object mapping each metric to value, unit and how it was measured."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Metric:
    """One figure, with the words that say how it was measured."""

    name: str
    value: float
    unit: str
    note: str
    target: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"value": self.value, "unit": self.unit, "note": self.note}
        if self.target:
            out["target"] = self.target
        return out


def save(metrics: list[Metric], path: Path = RESULTS) -> None:
    """Merge into the results file, so one benchmark can be rerun alone."""
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update({m.name: m.to_json() for m in metrics})
    path.write_text(json.dumps(dict(sorted(current.items())), indent=2) + "\n")


def render_table(metrics: list[Metric]) -> str:
    rows = [("metric", "value", "unit", "target")]
    rows += [(m.name, f"{m.value:.4g}", m.unit, m.target) for m in metrics]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
