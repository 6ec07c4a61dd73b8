"""The control plane: the API server with the controllers kube-controller-manager runs beside
it (garbage collector, namespace lifecycle, service-account and root-CA publishers), which
every client of a real cluster takes for granted. The kubelet adds the node's own."""

from __future__ import annotations

from cadre.localcluster.apiserver.server import ApiServer
from cadre.localcluster.controllers.builtin import Controllers


class LocalApiServer(ApiServer):
    """An :class:`ApiServer` whose controllers start with it and stop before it."""

    _controllers: Controllers | None = None

    async def start(self) -> None:
        await super().start()
        # They first react to every object already stored, so none is missed in between.
        self._controllers = Controllers(self.cluster, self.ca_pem)
        self._controllers.start()

    async def stop(self) -> None:
        if self._controllers is not None:
            await self._controllers.stop()
        await super().stop()
