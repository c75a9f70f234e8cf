"""Run a benchmark's ``main(options)`` (a Deferred) on the reactor, and exit
with 1 if it failed (its traceback printed), else 0."""

from __future__ import annotations

import sys

from twisted.internet import reactor, task


def run(main, options) -> None:
    failed = []

    def done(result):
        if reactor.running:
            reactor.stop()
        return result

    def report(failure):
        failure.printTraceback(file=sys.stderr)
        failed.append(failure)

    d = task.deferLater(reactor, 0, lambda: None)
    d.addCallback(lambda _: main(options))
    d.addErrback(report)
    d.addBoth(done)
    reactor.run()
    sys.exit(1 if failed else 0)
