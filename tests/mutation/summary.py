"""One line of figures for a cosmic-ray session: killed, survived, and
skipped as in an annotation (see annotations.py).

    python tests/mutation/summary.py session.sqlite
"""

from __future__ import annotations

import sys

from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome


def main(session: str) -> int:
    killed = survived = skipped = 0
    with use_db(session) as db:
        total = db.num_work_items
        for _, result in db.results:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                skipped += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                survived += 1
            else:  # killed, incompetent (fails to import), or timed out
                killed += 1
    pending = total - killed - survived - skipped
    print(
        f"{total} mutants: {killed} killed, {survived} survived, "
        f"{skipped} in annotations (skipped)" + (f", {pending} not run" if pending else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
