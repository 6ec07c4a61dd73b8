"""The control plane: the API server with the controllers kube-controller-manager runs beside
it (garbage collector, namespace lifecycle, service-account and root-CA publishers), which
every client of a real cluster takes for granted. The kubelet adds the node's own."""

from __future__ import annotations

from typing import Any

from cadre.localcluster.apiserver.server import ApiServer
from cadre.localcluster.controllers.builtin import Controllers
from cadre.localcluster.node.network import NODE_IP


class LocalApiServer(ApiServer):
    """An :class:`ApiServer` whose controllers start with it and stop before it."""

    _controllers: Controllers | None = None

    def __init__(self, *args: Any, **options: Any) -> None:
        # Pods with a network of their own reach the API server at the node's address.
        options.setdefault("alt_names", (NODE_IP,))
        super().__init__(*args, **options)

    async def start(self) -> None:
        await super().start()
        # They first react to every object already stored, so none is missed in between.
        self._controllers = Controllers(self.cluster, self.ca_pem)
        self._controllers.start()

    async def stop(self) -> None:
        if self._controllers is not None:
            await self._controllers.stop()
        await super().stop()
