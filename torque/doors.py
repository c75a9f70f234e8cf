"""Where a request goes: a compatible front door (SPEC 10) owns the paths
under its prefix, torque's own API the rest.

Each door is its own Klein app with its vendor's error shape; this resource
picks one by the request's path, before any routing, so the doors and
torque's API never see each other's routes.  It sits inside
:class:`torque.auth.RequireToken`, so ``--api-token`` guards every door.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.web import resource


class Doors(resource.Resource):
    """Sends a request whose path starts with a door's prefix to that door's
    resource, and any other to torque's API.

    :param doors: ``{path prefix: resource}``, such as
        ``{b"/v2/projects/": cloud_tasks}``; the longest matching prefix wins.
    """

    isLeaf = True

    def __init__(self, api: resource.IResource, doors: Mapping[bytes, resource.IResource]):
        super().__init__()
        self.api = api
        self.doors = sorted(doors.items(), key=lambda item: -len(item[0]))

    def render(self, request):
        for prefix, door in self.doors:
            if request.path.startswith(prefix):
                return door.render(request)
        return self.api.render(request)
