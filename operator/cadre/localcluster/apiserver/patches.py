"""The three patch types of the API server: JSON merge patch (RFC 7386), JSON patch (RFC 6902,
by the ``jsonpatch`` library) and strategic merge patch for built-in kinds, driven by the merge
keys and strategies of Kubernetes' own schemas."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from cadre.localcluster.apiserver.status import ApiError, bad_request

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, ``null`` deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        return jsonpatch.apply_patch(target, operations)
    except jsonpatch.JsonPatchTestFailed as err:
        raise ApiError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {err}"
        ) from err
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
        raise ApiError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {err}"
        ) from err
    except (TypeError, KeyError, ValueError) as err:
        raise bad_request(f"invalid JSON patch: {err}") from err


def _sub_schema(schema: dict[str, Any], key: str) -> dict[str, Any]:
    props = schema.get("properties")
    if props is not None:
        sub = props.get(key)
        return sub if isinstance(sub, dict) else {}
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else {}


def strategic_merge_patch(target: Any, patch: Any, schema: dict[str, Any]) -> Any:
    """Strategic merge patch as kube-apiserver applies it to a built-in object.

    Lists whose schema says ``x-kubernetes-patch-strategy: merge`` merge by their
    ``x-kubernetes-patch-merge-key`` (lists of scalars merge as sets); other lists replace.
    Directives: ``$patch`` (replace, delete, merge), ``$deleteFromPrimitiveList/<field>`` and
    ``$retainKeys``. ``$setElementOrder/<field>`` is accepted and ignored: merged lists keep
    the stored order, then new items (a documented simplification).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [item for item in result[field] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = _sub_schema(schema, key)
        if isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, sub)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, sub)
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(target: Any, patch: list[Any], schema: dict[str, Any]) -> list[Any]:
    strategy = str(schema.get("x-kubernetes-patch-strategy", ""))
    if "merge" not in strategy.split(",") or not isinstance(target, list):
        return [_strip_directives(item) for item in patch if not _is_directive(item)]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(item) for item in patch if not _is_directive(item)]
    key = schema.get("x-kubernetes-patch-merge-key")
    if key is None:  # a set of scalars
        merged = list(target)
        merged += [item for item in patch if item not in merged]
        return merged
    items_schema = schema.get("items", {})
    merged = list(target)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(_strip_directives(item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item, items_schema)
    return merged


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"$patch"}


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value
