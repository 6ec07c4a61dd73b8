"""Field ownership as kube-apiserver tracks it (``metadata.managedFields``) and server-side
apply, pure: which manager set which field, conflicts when an applier would change a field
another manager owns, and the merge of an applied configuration with the live object.

Paths are tuples of Kubernetes' FieldsV1 keys: ``f:<field>`` for a struct or map field,
``k:<json of the key fields>`` for an item of a list-map (``x-kubernetes-list-type: map``),
``v:<json value>`` for a set item (``x-kubernetes-list-type: set``). Any other list, and any
value under ``x-kubernetes-map-type: atomic``, is one leaf. For built-in kinds without a list
type, a patch strategy ``merge`` with a merge key makes a list-map on that key, without one a
set, as Kubernetes' own OpenAPI declares them.

What this leaves out, as recorded in docs/localcluster.md: version conversion of managed
fields (every kind here has one version), and the ``.`` markers of nested structs (a struct is
owned through its leaves).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from cadre.api.types import Obj

Path = tuple[str, ...]
_UNOWNED_META = {
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
    "generateName",
}  # fmt: skip


def _child(schema: Obj, key: str) -> Obj:
    props = schema.get("properties")
    if isinstance(props, dict) and key in props:
        sub = props[key]
        return sub if isinstance(sub, dict) else {}
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else {}


def list_kind(schema: Obj) -> tuple[str, list[str]]:
    """``(atomic|set|map, keys)`` of a list's schema."""
    kind = schema.get("x-kubernetes-list-type")
    if kind == "map":
        return "map", list(schema.get("x-kubernetes-list-map-keys") or [])
    if kind in ("set", "atomic"):
        return str(kind), []
    strategy = str(schema.get("x-kubernetes-patch-strategy", "")).split(",")
    if "merge" in strategy:
        key = schema.get("x-kubernetes-patch-merge-key")
        return ("map", [str(key)]) if key else ("set", [])
    return "atomic", []


def _atomic_map(schema: Obj) -> bool:
    return schema.get("x-kubernetes-map-type") == "atomic"


def item_key(item: Any, keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys if k in item}, sort_keys=True,
                             separators=(",", ":"))  # fmt: skip


def _value_key(value: Any) -> str:
    return "v:" + json.dumps(value, sort_keys=True, separators=(",", ":"))


def fields(value: Any, schema: Obj, path: Path = (), top: bool = True) -> set[Path]:
    """Every path a configuration sets: leaves, and list-map and set items."""
    out: set[Path] = set()
    if isinstance(value, dict) and not _atomic_map(schema) and (value or not path):
        for key, sub in value.items():
            if top and key in ("apiVersion", "kind", "status"):
                continue
            if top and key == "metadata" and isinstance(sub, dict):
                meta = {k: v for k, v in sub.items() if k not in _UNOWNED_META}
                if meta:  # a name alone is not a field anyone owns
                    out |= fields(meta, _child(schema, key), (*path, "f:metadata"), False)
                continue
            out |= fields(sub, _child(schema, key), (*path, f"f:{key}"), False)
        return out
    if isinstance(value, list) and value:
        kind, keys = list_kind(schema)
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        if kind == "map" and all(isinstance(i, dict) for i in value):
            for item in value:
                here = (*path, item_key(item, keys))
                out.add(here)
                out |= fields(item, items or {}, here, False)
            return out
        if kind == "set":
            out |= {(*path, _value_key(item)) for item in value}
            return out
    if path:
        out.add(path)
    return out


def changed(old: Any, new: Any, schema: Obj, path: Path = (), top: bool = True) -> set[Path]:
    """The paths an update changed (set, altered or removed), as owned by its manager."""
    if old == new:
        return set()
    if isinstance(old, dict) and isinstance(new, dict) and not _atomic_map(schema):
        out: set[Path] = set()
        for key in set(old) | set(new):
            if top and key in ("apiVersion", "kind", "status"):
                continue
            if top and key == "metadata":
                before = {k: v for k, v in (old.get(key) or {}).items() if k not in _UNOWNED_META}
                after = {k: v for k, v in (new.get(key) or {}).items() if k not in _UNOWNED_META}
                if before or after:
                    out |= changed(before, after, _child(schema, key), (*path, "f:metadata"),
                                   False)  # fmt: skip
                continue
            out |= changed(old.get(key), new.get(key), _child(schema, key), (*path, f"f:{key}"),
                           False)  # fmt: skip
        return out
    if isinstance(old, list) and isinstance(new, list):
        kind, keys = list_kind(schema)
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        if kind == "map" and all(isinstance(i, dict) for i in [*old, *new]):
            before = {item_key(i, keys): i for i in old}
            after = {item_key(i, keys): i for i in new}
            out = set()
            for key in set(before) | set(after):
                here = (*path, key)
                if key not in before or key not in after:
                    out.add(here)
                    out |= fields(after.get(key) or before.get(key), items or {}, here, False)
                else:
                    out |= changed(before[key], after[key], items or {}, here, False)
            return out
        if kind == "set":
            return {(*path, _value_key(v)) for v in old + new if (v in old) != (v in new)}
    if new is None:
        return fields(old, schema, path, False) or {path}
    return fields(new, schema, path, False) | ({path} if old is None or new is None else set())


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    """Whether ``path`` exists in ``obj``, and its value."""
    current = obj
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f" and isinstance(current, dict) and rest in current:
            current = current[rest]
        elif kind == "k" and isinstance(current, list):
            keys = json.loads(rest)
            found = [i for i in current if isinstance(i, dict)
                     and all(i.get(k) == v for k, v in keys.items())]  # fmt: skip
            if not found:
                return False, None
            current = found[0]
        elif kind == "v" and isinstance(current, list):
            value = json.loads(rest)
            if value not in current:
                return False, None
            current = value
        else:
            return False, None
    return True, current


def remove(obj: Any, path: Path) -> None:
    """Remove the field or item at ``path`` (absent: nothing happens); emptied maps stay."""
    if not path:
        return
    found, parent = value_at(obj, path[:-1])
    if not found:
        return
    kind, _, rest = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind == "k" and isinstance(parent, list):
        keys = json.loads(rest)
        parent[:] = [i for i in parent if not (isinstance(i, dict)
                     and all(i.get(k) == v for k, v in keys.items()))]  # fmt: skip
    elif kind == "v" and isinstance(parent, list):
        value = json.loads(rest)
        parent[:] = [i for i in parent if i != value]


def merge(live: Any, applied: Any, schema: Obj) -> Any:
    """The applied configuration merged into the live object: maps field by field, list-maps
    item by item (by key), sets as unions, anything else replaced."""
    if isinstance(live, dict) and isinstance(applied, dict) and not _atomic_map(schema):
        result = dict(live)
        for key, value in applied.items():
            result[key] = merge(live.get(key), value, _child(schema, key))
        return result
    if isinstance(live, list) and isinstance(applied, list):
        kind, keys = list_kind(schema)
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        if kind == "map" and all(isinstance(i, dict) for i in [*live, *applied]):
            result_list = list(live)
            for item in applied:
                # A key field the applier left out (such as a port's protocol, which the server
                # defaults) matches whatever the live item has, as after Kubernetes' defaulting.
                given = [k for k in keys if k in item]
                index = next((n for n, old in enumerate(result_list)
                              if all(old.get(k) == item[k] for k in given)), None)  # fmt: skip
                if index is None:
                    result_list.append(copy.deepcopy(item))
                else:
                    result_list[index] = merge(result_list[index], item, items or {})
            return result_list
        if kind == "set":
            return [*live, *[copy.deepcopy(v) for v in applied if v not in live]]
    return copy.deepcopy(applied)


# ---------------------------------------------------------------------------------------------
# managedFields entries


def encode(paths: set[Path]) -> Obj:
    """A path set as FieldsV1 (nested keys; ``.`` marks an item owned as a whole)."""
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    _mark(root, paths, ())
    return root


def _mark(node: Obj, paths: set[Path], here: Path) -> None:
    for key, child in node.items():
        if key == ".":
            continue
        path = (*here, key)
        if child and path in paths:
            child["."] = {}
        _mark(child, paths, path)


def decode(fields_v1: Any, here: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields_v1, dict):
        return out
    for key, child in fields_v1.items():
        if key == ".":
            out.add(here)
        elif isinstance(child, dict) and child:
            out |= decode(child, (*here, key))
        else:
            out.add((*here, key))
    return out


@dataclass
class Entry:
    manager: str
    operation: str
    """``Apply`` or ``Update``."""
    api_version: str
    subresource: str
    time: str
    paths: set[Path]

    def to_json(self) -> Obj:
        out: Obj = {"manager": self.manager, "operation": self.operation,
                    "apiVersion": self.api_version, "time": self.time,
                    "fieldsType": "FieldsV1", "fieldsV1": encode(self.paths)}  # fmt: skip
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def entries(obj: Obj) -> list[Entry]:
    return [
        Entry(str(e.get("manager", "")), str(e.get("operation", "Update")),
              str(e.get("apiVersion", "")), str(e.get("subresource", "")),
              str(e.get("time", "")), decode(e.get("fieldsV1")))
        for e in obj.get("metadata", {}).get("managedFields") or []
        if isinstance(e, dict)
    ]  # fmt: skip


def _under(path: Path, prefix: Path) -> bool:
    return path[: len(prefix)] == prefix


def record_update(
    old: Obj | None, new: Obj, schema: Obj, manager: str, subresource: str, stamp: str
) -> list[Obj]:
    """The managedFields after an update (or a create, ``old`` None): the paths it changed
    become the manager's (its ``Update`` entry for that subresource), taken from others."""
    current = entries(old) if old is not None else []
    touched = fields(new, schema) if old is None else changed(old, new, schema)
    if subresource == "status":
        touched = {("f:status", *p[1:]) for p in _status_paths(old, new, schema)}
    if not touched:
        return [e.to_json() for e in current]
    return _take(current, touched, manager, "Update", new["apiVersion"], subresource, stamp)


def _status_paths(old: Obj | None, new: Obj, schema: Obj) -> set[Path]:
    before = (old or {}).get("status")
    return {("f:status", *p) for p in changed(before, new.get("status"), _child(schema, "status"),
                                             (), False)}  # fmt: skip


def _take(
    current: list[Entry], paths: set[Path], manager: str, operation: str, api_version: str,
    subresource: str, stamp: str, replace: bool = False, share: bool = False,
) -> list[Obj]:  # fmt: skip
    """The entries once ``manager`` owns ``paths`` (with ``replace``, exactly those): taken
    from the other managers, or (``share``) owned beside them. Entries keep their order and
    an unchanged entry keeps its time, so an update that changes nothing writes nothing."""
    out: list[Entry] = []
    mine: Entry | None = None
    for entry in current:
        if (entry.manager, entry.operation, entry.subresource) == (manager, operation, subresource):
            owned = set(paths) if replace else entry.paths | paths
            time = entry.time if owned == entry.paths else stamp
            mine = Entry(manager, operation, api_version, subresource, time, owned)
            out.append(mine)
            continue
        if not share:
            entry.paths = {p for p in entry.paths if not any(_under(p, t) for t in paths)}
        if entry.paths:
            out.append(entry)
    if mine is None:
        out.append(Entry(manager, operation, api_version, subresource, stamp, set(paths)))
    return [e.to_json() for e in out]


class ApplyConflict(Exception):  # noqa: N818 - the API answers it as 409 Conflict
    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        super().__init__(self.message())

    def message(self) -> str:
        lines = [f'conflict with "{manager}": {dotted(path)}' for manager, path in self.conflicts]
        return f"Apply failed with {len(lines)} conflict{'s' if len(lines) > 1 else ''}: " + (
            "; ".join(lines)
        )


def dotted(path: Path) -> str:
    parts = []
    for element in path:
        kind, _, rest = element.partition(":")
        parts.append(f".{rest}" if kind == "f" else f"[{rest}]")
    return "".join(parts)


def apply(
    live: Obj | None, applied: Obj, schema: Obj, manager: str, force: bool, stamp: str
) -> Obj:
    """Server-side apply of ``applied`` by ``manager`` to ``live`` (None: create). Returns the
    new object with its managedFields; raises ``ApplyConflict`` naming each field another
    manager owns and the applied configuration would change, unless ``force``."""
    wanted = fields(applied, schema)
    if live is None:
        created: Obj = copy.deepcopy(applied)
        created.setdefault("metadata", {})["managedFields"] = _take(
            [], wanted, manager, "Apply", applied["apiVersion"], "", stamp, replace=True
        )
        return created
    current = entries(live)
    conflicts = []
    for entry in current:
        if entry.manager == manager and entry.operation == "Apply":
            continue
        for path in sorted(entry.paths & wanted):
            _, have = value_at(live, path)
            _, want = value_at(applied, path)
            if have != want and not path[-1].startswith(("k:", "v:")):
                conflicts.append((entry.manager, path))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    previous = next((e.paths for e in current
                     if e.manager == manager and e.operation == "Apply"), set())  # fmt: skip
    result: Obj = merge(dict(live), applied, schema)
    others = set().union(*(e.paths for e in current
                           if not (e.manager == manager and e.operation == "Apply")))  # fmt: skip
    for path in sorted(previous - wanted, key=len, reverse=True):
        if path not in others and not any(_under(o, path) for o in others):
            remove(result, path)
    # Without force, fields others own with the value applied become shared; with force, the
    # applier takes every field it applies.
    result["metadata"]["managedFields"] = _take(
        current, wanted, manager, "Apply", applied["apiVersion"], "", stamp, replace=True,
        share=not force,
    )  # fmt: skip
    return result
