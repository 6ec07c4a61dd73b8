"""The CLI's reads and writes on a cluster, through the ``kubernetes`` client: what
``kubectl apply``, ``get``, and ``logs -f`` do, typed for the rest of the CLI."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from cadre.api.types import Obj

GROUP, VERSION = "cadre.dev", "v1alpha1"


class ApplyError(Exception):
    """The API server refused an object; the message is the server's (it names the field)."""


class ProxyError(Exception):
    """A pod (or the API server's proxy to it) answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotFoundError(Exception):
    """The object the user named does not exist; the message says which and where."""


def _server_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


class Kube:
    def __init__(self, kubeconfig: Path | None, context: str | None = None) -> None:
        """``kubeconfig`` None: $KUBECONFIG or ~/.kube/config, as kubectl does."""
        self.client: ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            str(kubeconfig) if kubeconfig else None, context=context
        )
        self.dynamic = DynamicClient(self.client)  # type: ignore[no-untyped-call]
        self.core = CoreV1Api(self.client)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]

    def _plain(self, found: Any) -> Obj:
        plain: Obj = found.to_dict() if hasattr(found, "to_dict") else found
        return plain

    def apply(self, obj: Obj, namespace: str) -> str:
        """Create the object, or replace it when it exists; "created" or "configured"."""
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        resource = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        try:
            resource.create(body=obj, namespace=namespace)
            return "created"
        except ApiException as err:
            if err.status != 409:
                raise ApplyError(_server_message(err)) from err
        name = obj["metadata"]["name"]
        current = self._plain(resource.get(name=name, namespace=namespace))
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            resource.replace(body=obj, name=name, namespace=namespace)
        except ApiException as err:
            raise ApplyError(_server_message(err)) from err
        return "configured"

    @property
    def host(self) -> str:
        return str(self.client.configuration.host)

    def _tasks(self) -> Any:
        return self.dynamic.resources.get(api_version=f"{GROUP}/{VERSION}", kind="Task")

    def create(self, obj: Obj, namespace: str) -> Obj:
        resource = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        try:
            return self._plain(resource.create(body=obj, namespace=namespace))
        except ApiException as err:
            raise ApplyError(_server_message(err)) from err

    def get_task(self, namespace: str, name: str) -> Obj:
        try:
            return self._plain(self._tasks().get(name=name, namespace=namespace))
        except ApiException as err:
            if err.status == 404:
                raise NotFoundError(f'Task "{name}" not found in namespace "{namespace}"') from err
            raise ApplyError(_server_message(err)) from err

    def patch_task_spec(self, namespace: str, name: str, spec: Obj) -> Obj:
        """A merge patch of the Task's spec (what ``kubectl patch --type merge`` sends)."""
        try:
            return self._plain(
                self._tasks().patch(
                    name=name, namespace=namespace, body={"spec": spec},
                    content_type="application/merge-patch+json",
                )
            )  # fmt: skip
        except ApiException as err:
            if err.status == 404:
                raise NotFoundError(f'Task "{name}" not found in namespace "{namespace}"') from err
            raise ApplyError(_server_message(err)) from err

    def get_configmap(self, namespace: str, name: str, what: str) -> Obj:
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as err:
            if err.status == 404:
                raise NotFoundError(f'{what} not found in namespace "{namespace}"') from err
            raise ApplyError(_server_message(err)) from err
        plain: Obj = self.client.sanitize_for_serialization(found)  # type: ignore[no-untyped-call]
        return plain

    def replace_configmap_data(self, namespace: str, current: Obj, data: dict[str, str]) -> None:
        """Write ``data`` with the version read, so a concurrent writer's change is not lost
        (the server answers 409 and nothing is written)."""
        body = {**current, "data": data}
        try:
            self.core.replace_namespaced_config_map(
                current["metadata"]["name"],
                namespace,
                body,  # type: ignore[arg-type]
            )
        except ApiException as err:
            raise ApplyError(_server_message(err)) from err

    def list_tasks(self, namespace: str) -> list[Obj]:
        resource = self.dynamic.resources.get(api_version=f"{GROUP}/{VERSION}", kind="Task")
        items: list[Obj] = self._plain(resource.get(namespace=namespace))["items"]
        return items

    def pod_phase(self, namespace: str, name: str) -> str | None:
        try:
            pod = self.core.read_namespaced_pod(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return pod.status.phase if pod.status else None

    def node_address(self) -> str | None:
        """The first node's InternalIP: where pods reach services of the host it runs on."""
        for node in self.core.list_node().items:
            for address in (node.status.addresses if node.status else None) or []:
                if address.type == "InternalIP":
                    return str(address.address)
        return None

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        # As the API server sends it (camelCase), not the client's snake_case models.
        found: Any = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        items: list[Obj] = json.loads(found.data)["items"]
        return items

    def log_tail(self, namespace: str, pod: str, lines: int, previous: bool = False) -> str:
        """The last ``lines`` of the pod's log (of its previous run with ``previous``); empty
        when there is none."""
        try:
            text: str = self.core.read_namespaced_pod_log(
                pod, namespace, tail_lines=lines, previous=previous
            )
        except ApiException:
            return ""
        return text

    def proxy_lines(
        self, namespace: str, pod: str, path: str, query: list[tuple[str, str]]
    ) -> Iterator[bytes]:
        """Lines a pod serves over HTTP, through the API server's pod proxy (``pod`` may be
        ``NAME:PORT``), as they come."""
        method, url, headers, body, post = self.client.param_serialize(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/proxy/{path}",
            query_params=query, auth_settings=["BearerToken"],
        )  # fmt: skip
        answer: Any = self.client.call_api(method, url, header_params=headers, body=body,
                                           post_params=post)  # fmt: skip
        response: Any = answer.response  # urllib3's, not read yet: it streams
        if response.status >= 400:
            text = response.data.decode(errors="replace").strip()
            with contextlib.suppress(ValueError, KeyError, TypeError):
                text = str(json.loads(text)["message"])  # the API server's own error
            raise ProxyError(response.status, text)
        pending = b""
        try:
            for chunk in response.stream(4096):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                yield from complete
        finally:
            response.release_conn()

    def follow_log(self, namespace: str, pod: str) -> Iterator[str]:
        """The pod's log lines from its start, then as they come, until the container ends
        (``kubectl logs -f``)."""
        response: Any = self.core.read_namespaced_pod_log(
            pod, namespace, follow=True, _preload_content=False
        )
        pending = b""
        try:
            for chunk in response.stream(1024):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode(errors="replace")
        finally:
            response.release_conn()
