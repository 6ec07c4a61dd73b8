"""A pod's volumes as folders, its environment, and the one translation from in-cluster paths
to local ones.

Each volume is a folder under the pod's directory, owned by the pod's user with private
modes. With a root of its own (``rootfs.py``) a container sees each at its mount path. Where
bwrap cannot run, a container sees the host's filesystem, so every environment value, command
and argument that names a path under a ``volumeMount`` is rewritten to that folder
(``/workspace/x`` becomes ``<state>/pods/<uid>/volumes/workspace/x``), and a pod that mounts a
service-account token gets ``KUBECONFIG`` pointing at a kubeconfig that reads that token, so
in-cluster clients (``kubernetes.config.load_config()``, kopf) reach the API server. Nothing in
Cadre's operator, harness or sandbox knows about this module.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cadre.api.types import Obj

Lookup = Callable[[str, str, str], Obj | None]
"""(plural, namespace, name) -> the object or None, read from the API server's store."""


class VolumeNotReady(Exception):  # noqa: N818 - a state, reported as the container's reason
    """A volume's source is missing: the pod waits in ContainerCreating, as in Kubernetes."""


@dataclass
class Owner:
    uid: int | None
    gid: int | None

    def own(self, path: Path, mode: int) -> None:
        if self.uid is not None:
            os.chown(path, self.uid, self.gid if self.gid is not None else self.uid)
        path.chmod(mode)

    def own_tree(self, root: Path) -> None:
        """Give a claim's contents to this pod's user, as the kubelet's fsGroup handling does
        (``fsGroupChangePolicy: Always``): a pod that replaces another on the same claim runs
        as a different host user here, and must still read and write its files."""
        if self.uid is None:
            return
        gid = self.gid if self.gid is not None else self.uid
        for folder, folders, files in os.walk(root):
            for entry in [*folders, *files]:
                os.chown(os.path.join(folder, entry), self.uid, gid, follow_symlinks=False)


def _write(path: Path, data: bytes, owner: Owner, mode: int = 0o400) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    owner.own(path, mode)


def field_value(pod: Obj, path: str) -> str:
    """A downward-API ``fieldPath`` of the pod (``metadata.name``, ``status.podIP``, ...)."""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str(pod["metadata"].get(match[1], {}).get(match[2], ""))
    current: Any = pod
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    return "" if current is None else str(current)


def _items(data: dict[str, bytes], items: list[Obj] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


@dataclass
class PodFilesystem:
    """The folders of one pod: ``<root>/volumes/<name>`` and ``<root>/logs``."""

    root: Path
    owner: Owner
    claims_root: Path
    volumes: dict[str, Path] = field(default_factory=dict)

    def prepare(self, pod: Obj, lookup: Lookup, issue_token: Callable[[Obj, int], str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(mode=0o700, exist_ok=True)  # the kubelet's only
        self.owner.own(self.root, 0o711)
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes", []):
            name = volume["name"]
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                found = lookup("persistentvolumeclaims", namespace, claim)
                if found is None:
                    raise VolumeNotReady(f'persistentvolumeclaim "{claim}" not found')
                target = self.claims_root / namespace / f"{claim}-{found['metadata']['uid']}"
            else:
                target = self.root / "volumes" / name
            target.mkdir(parents=True, exist_ok=True)
            self.owner.own(target, 0o700)
            if "persistentVolumeClaim" in volume:
                self.owner.own_tree(target)
            self.volumes[name] = target
            files = self._files(volume, pod, lookup, issue_token)
            for relative, data in files.items():
                _write(target / relative, data, self.owner)

    def _files(
        self, volume: Obj, pod: Obj, lookup: Lookup, issue_token: Callable[[Obj, int], str]
    ) -> dict[str, bytes]:
        namespace = pod["metadata"]["namespace"]
        if "secret" in volume:
            return self._secret(volume["secret"], namespace, lookup)
        if "configMap" in volume:
            return self._config_map(volume["configMap"], namespace, lookup)
        if "projected" in volume:
            files: dict[str, bytes] = {}
            for source in volume["projected"].get("sources", []):
                if "serviceAccountToken" in source:
                    spec = source["serviceAccountToken"]
                    token = issue_token(pod, int(spec.get("expirationSeconds", 3600)))
                    files[spec["path"]] = token.encode()
                elif "configMap" in source:
                    files.update(self._config_map(source["configMap"], namespace, lookup))
                elif "secret" in source:
                    files.update(self._secret(source["secret"], namespace, lookup))
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items", []):
                        value = field_value(pod, item.get("fieldRef", {}).get("fieldPath", ""))
                        files[item["path"]] = value.encode()
            return files
        return {}

    def _secret(self, ref: Obj, namespace: str, lookup: Lookup) -> dict[str, bytes]:
        name = ref.get("secretName") or ref.get("name", "")
        secret = lookup("secrets", namespace, name)
        if secret is None:
            if ref.get("optional"):
                return {}
            raise VolumeNotReady(f'secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        return _items(data, ref.get("items"))

    def _config_map(self, ref: Obj, namespace: str, lookup: Lookup) -> dict[str, bytes]:
        name = ref.get("name", "")
        config_map = lookup("configmaps", namespace, name)
        if config_map is None:
            if ref.get("optional"):
                return {}
            raise VolumeNotReady(f'configmap "{name}" not found')
        data = {k: v.encode() for k, v in (config_map.get("data") or {}).items()}
        data.update(
            {k: base64.b64decode(v) for k, v in (config_map.get("binaryData") or {}).items()}
        )
        return _items(data, ref.get("items"))

    def mounts(self, container: Obj) -> dict[str, Path]:
        """In-cluster mount path -> local folder, for one container."""
        found = {}
        for mount in container.get("volumeMounts", []):
            base = self.volumes.get(mount["name"])
            if base is not None:
                found[mount["mountPath"].rstrip("/") or "/"] = base / mount.get("subPath", "")
        return found


def translate(value: str, mounts: dict[str, Path]) -> str:
    """Rewrite a path under a mount to its local folder; other values are left alone."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(mounts[mount_path]) + value[len(mount_path) :]
    return value


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as written)."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, value)


def container_env(
    pod: Obj, container: Obj, image_env: dict[str, str], lookup: Lookup, mounts: dict[str, Path]
) -> dict[str, str]:
    """The environment Kubernetes gives a container: the image's, then envFrom, then env,
    with secret/configMap/downward-API references resolved and paths translated."""
    namespace = pod["metadata"]["namespace"]
    # Literal values (the image's and the pod's) are translated once, when set; values read
    # from Secrets, ConfigMaps or the downward API are data and stay as they are.
    env = {k: translate(v, mounts) for k, v in image_env.items()}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            found = lookup("configmaps", namespace, source["configMapRef"]["name"]) or {}
            env.update({prefix + k: v for k, v in (found.get("data") or {}).items()})
        if "secretRef" in source:
            found = lookup("secrets", namespace, source["secretRef"]["name"]) or {}
            env.update(
                {
                    prefix + k: base64.b64decode(v).decode()
                    for k, v in (found.get("data") or {}).items()
                }
            )
    for item in container.get("env", []):
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = translate(expand(item.get("value", ""), env), mounts)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if secret else "configMapKeyRef"]
            referenced = lookup("secrets" if secret else "configmaps", namespace, ref["name"])
            data = (referenced or {}).get("data") or {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                kind = "secret" if secret else "configmap"
                raise VolumeNotReady(
                    f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                )
            value = data[ref["key"]]
            env[name] = base64.b64decode(value).decode() if secret else value
    return env


def write_kubeconfig(
    path: Path, server: str, ca_file: Path, token_file: Path, owner: Owner
) -> None:
    """A kubeconfig that reads the pod's projected token, as in-cluster config would."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "pod", "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "pod", "context": {"cluster": "local", "user": "pod"}}],
        "current-context": "pod",
    }
    _write(path, yaml.safe_dump(config).encode(), owner)
