"""A cosmic-ray filter: skip mutations inside type annotations.

Every torque module starts with ``from __future__ import annotations``, so an
annotation is kept as a string and never evaluated (attrs reads only the
names of annotated fields, and nothing in torque calls ``get_type_hints``).
``x: str | None`` mutated to ``x: str + None`` is therefore an equivalent
mutant, every time: there are dozens per module, and running the tests for
each would take minutes to say nothing.  This marks them skipped before
``cosmic-ray exec``, so the report counts them apart as explained.

    python tests/mutation/annotations.py session.sqlite
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult

REASON = "in an annotation, never evaluated (from __future__ import annotations)"


@cache
def annotation_spans(path: Path) -> tuple[tuple[tuple[int, int], tuple[int, int]], ...]:
    """``((line, col), (end_line, end_col))`` of every annotation in the
    module at ``path``, or nothing if its annotations are evaluated."""
    tree = ast.parse(path.read_text())
    postponed = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )
    if not postponed:
        return ()
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            annotations.append(node.returns)
    return tuple(((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in annotations)


def inside(mutation) -> bool:
    start, end = tuple(mutation.start_pos), tuple(mutation.end_pos)
    return any(
        first <= start and end <= last for first, last in annotation_spans(mutation.module_path)
    )


def main(session: str) -> int:
    skipped = 0
    with use_db(session) as db:
        for item in db.work_items:
            if all(inside(mutation) for mutation in item.mutations):
                result = WorkResult(output=REASON, worker_outcome=WorkerOutcome.SKIPPED)
                db.set_result(item.job_id, result)
                skipped += 1
    print(f"{skipped} mutations in annotations skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
