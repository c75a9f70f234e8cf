"""A cosmic-ray filter for ``tests/mutation/run --survivors``: run only the
mutants that survived the last run (listed in its report), to check that
new tests kill them without running the whole module again.  Tests are only
ever added, so a mutant killed before is still killed.

    python tests/mutation/survivors.py session.sqlite out/<module>.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult

REASON = "killed in the last full run"


def main(session: str, report: str) -> int:
    survivors = set(re.findall(r"^(\S+\.py) (\S+) (\d+)$", Path(report).read_text(), re.M))
    skipped = 0
    with use_db(session) as db:
        done = {job_id for job_id, _ in db.results}  # in annotations
        for item in db.work_items:
            if item.job_id in done:
                continue
            keys = {
                (str(m.module_path), m.operator_name, str(m.occurrence)) for m in item.mutations
            }
            if not keys & survivors:
                db.set_result(
                    item.job_id, WorkResult(output=REASON, worker_outcome=WorkerOutcome.SKIPPED)
                )
                skipped += 1
    print(f"{len(survivors)} survivors of the last run to run again ({skipped} mutants skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
