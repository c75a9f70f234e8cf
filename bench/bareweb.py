"""A bare ``twisted.web`` resource answering a small JSON body, access log
off: how fast this machine serves HTTP from Twisted at all right now.

``bench/run.py`` measures it with wrk as a calibration figure, so that
absolute targets (adds per second) can be read against the machine's state:
on a shared 2-core machine the same code runs twice as fast one day as the
next.  Usage: ``python bench/bareweb.py PORT``.
"""

import sys

from twisted.internet import reactor
from twisted.web import resource, server


class Ping(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"status": "ok"}'


def main() -> None:
    site = server.Site(Ping())
    site.log = lambda request: None
    reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
