"""One line of figures for a cosmic-ray session: killed, survived, and
skipped as in an annotation (annotations.py) or, in a ``--survivors`` run,
as killed in the last full run (survivors.py).

    python tests/mutation/summary.py session.sqlite
"""

from __future__ import annotations

import sys

import survivors
from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome


def main(session: str) -> int:
    killed = survived = in_annotations = killed_before = 0
    with use_db(session) as db:
        total = db.num_work_items
        for _, result in db.results:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                if result.output == survivors.REASON:
                    killed_before += 1
                else:
                    in_annotations += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                survived += 1
            else:  # killed, incompetent (fails to import), or timed out
                killed += 1
    pending = total - killed - survived - in_annotations - killed_before
    line = f"{total} mutants: {killed + killed_before} killed"
    if killed_before:
        line += f" ({killed_before} in the last full run, {killed} of its survivors now)"
    line += f", {survived} survived, {in_annotations} in annotations (skipped)"
    print(line + (f", {pending} not run" if pending else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
