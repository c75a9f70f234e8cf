"""The QStash door on the node's site: requests under its paths go to its
Klein app, every other one to torque's own API."""

from __future__ import annotations

from twisted.web import resource

from torque.qstash.routes import PREFIXES


class QStashDoor(resource.Resource):
    """Sends ``/v2/publish/…``, ``/v2/queues…`` and QStash's other paths
    (:data:`~torque.qstash.routes.PREFIXES`) to ``door``, the rest to
    ``api``.  Both see the whole path, as the site's root would."""

    isLeaf = True

    def __init__(self, api: resource.IResource, door: resource.IResource):
        super().__init__()
        self.api = api
        self.door = door

    def render(self, request):
        path = request.path
        for prefix in PREFIXES:
            if path == prefix.rstrip(b"/") or path.startswith(prefix):
                return self.door.render(request)
        return self.api.render(request)
