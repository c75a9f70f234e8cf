"""Mutation testing for the Lua in torque/scripts.py, which cosmic-ray leaves
alone (to Python it is only strings).

Each mutant changes one token of one script: a comparison flipped (``<`` and
``<=``, ``>`` and ``>=``, ``==`` and ``~=``), ``+`` and ``-`` (binary only),
``*`` and ``/``, ``and`` and ``or``, or a number one up (``KEYS[2]``
becomes ``KEYS[3]``, ``LIMIT 0, 100`` becomes ``LIMIT 0, 101``).  Comments and Lua strings are left
alone.  The mutated scripts.py is written into a scratch copy of the
checkout, the guard tests run against it (tests.test_store: a real
redis-server, which the test run starts itself), and a mutant that no test
notices survives.

    python tests/mutation/lua.py SCRATCH_SRC REPORT [TESTS...] [--only NAME] [--list]

``SCRATCH_SRC`` is a copy of the checkout (``tests/mutation/run scripts``
makes one); ``REPORT`` gets each survivor's diff and, in ``REPORT`` with
``.summary`` for ``.txt``, the figures.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import os
import re
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import attrs

SCRIPTS = "torque/scripts.py"

SWAPS = {
    "<": ["<="],
    "<=": ["<"],
    ">": [">="],
    ">=": [">"],
    "==": ["~="],
    "~=": ["=="],
    "+": ["-"],
    "-": ["+"],
    "*": ["/"],
    "/": ["*"],
    "and": ["or"],
    "or": ["and"],
}
# After these, a "-" is a unary minus (turning it into "+" is no Lua at all).
KEYWORDS = frozenset(
    [
        "and",
        "break",
        "do",
        "else",
        "elseif",
        "end",
        "for",
        "function",
        "if",
        "in",
        "local",
        "not",
        "or",
        "repeat",
        "return",
        "then",
        "until",
        "while",
    ]
)
TOKEN = re.compile(
    r"""
    (?P<comment>--[^\n]*)
  | (?P<string>'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
  | (?P<name>[A-Za-z_]\w*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<op>\.\.\.|\.\.|==|~=|<=|>=|[<>+\-*/\#(){}\[\],;=.:%^])
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)


@attrs.frozen
class Mutant:
    script: str  # the constant in scripts.py that holds it
    start: int  # offsets into scripts.py
    end: int
    original: str
    replacement: str

    def apply(self, source: str) -> str:
        return source[: self.start] + self.replacement + source[self.end :]

    def diff(self, source: str) -> str:
        lines = difflib.unified_diff(
            source.splitlines(keepends=True),
            self.apply(source).splitlines(keepends=True),
            f"a/{SCRIPTS}",
            f"b/{SCRIPTS}",
            n=2,
        )
        return "".join(lines)


def lua_strings(source: str):
    """``(name, start, end)``: the offsets in ``source`` of the text of each
    string literal in a module-level assignment (the scripts), and the name
    assigned."""
    names = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            for line in range(node.lineno, node.end_lineno + 1):
                names[line] = node.targets[0].id
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.STRING or token.start[0] not in names:
            continue
        start = line_starts[token.start[0] - 1] + token.start[1]
        end = line_starts[token.end[0] - 1] + token.end[1]
        quote = '"""' if token.string.startswith('"""') else token.string[0]
        yield names[token.start[0]], start + len(quote), end - len(quote)


def mutants(source: str) -> list[Mutant]:
    found = []
    for script, start, end in lua_strings(source):
        previous = None  # the last significant token, for unary minus
        for match in TOKEN.finditer(source, start, end):
            kind, text = match.lastgroup, match.group()
            if kind in ("comment", "space"):
                continue
            binary = previous is not None and (
                previous[0] in ("number", "string")
                or previous[0] == "name"
                and previous[1] not in KEYWORDS
                or previous[1] in (")", "]", "}")
            )
            if kind == "number" and "." not in text:
                replacements = [str(int(text) + 1)]
            elif text in SWAPS and (kind == "name" or text not in "+-" or binary):
                replacements = SWAPS[text]
            else:
                replacements = []
            for replacement in replacements:
                found.append(Mutant(script, match.start(), match.end(), text, replacement))
            previous = (kind, text)
    return found


def run_tests(src: Path, guards: list[str], timeout: float) -> tuple[bool, float]:
    """Run the guards in ``src``: (passed, seconds).  A run past ``timeout``
    is killed with its redis-server, and counts as failed."""
    env = dict(os.environ, PYTHONPATH=str(src))
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "twisted.trial", *guards],
        cwd=src,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        passed = process.wait(timeout) == 0
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        passed = False
    return passed, time.monotonic() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("guards", nargs="*", default=["tests.test_store"], help="test modules")
    parser.add_argument("--only", action="append", help="just this script (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run only the mutants that survived the last run (in REPORT): tests are only "
        "ever added, so the others are still killed",
    )
    args = parser.parse_args(argv)

    path = args.src / SCRIPTS
    source = path.read_text()
    every = [m for m in mutants(source) if not args.only or m.script in args.only]
    todo = every
    if args.survivors:
        last = args.report.read_text()
        todo = [m for m in every if m.diff(source) in last]
    if args.list:
        for m in todo:
            line = source.count("\n", 0, m.start) + 1
            print(f"{m.script} line {line}: {m.original} -> {m.replacement}")
        print(f"{len(todo)} mutants")
        return 0

    passed, baseline = run_tests(args.src, args.guards, 600)
    if not passed:
        print("the guard tests fail on the unmutated code", file=sys.stderr)
        return 2
    timeout = max(60.0, 10 * baseline)
    survivors = []
    try:
        for number, mutant in enumerate(todo, 1):
            path.write_text(mutant.apply(source))
            passed, _ = run_tests(args.src, args.guards, timeout)
            if passed:
                survivors.append(mutant)
            line = source.count("\n", 0, mutant.start) + 1
            verdict = "SURVIVED" if passed else "killed"
            print(
                f"[{number}/{len(todo)}] {mutant.script} line {line}: "
                f"{mutant.original} -> {mutant.replacement}: {verdict}",
                flush=True,
            )
    finally:
        path.write_text(source)

    with args.report.open("w") as report:
        for mutant in survivors:
            report.write(f"[{mutant.script}] {mutant.original} -> {mutant.replacement}\n")
            report.write(mutant.diff(source) + "=" * 12 + "\n")
    killed_now = len(todo) - len(survivors)
    summary = f"{len(every)} mutants: {len(every) - len(survivors)} killed"
    if args.survivors:
        summary += (
            f" ({len(every) - len(todo)} in the last full run, {killed_now} of its survivors now)"
        )
    summary += f", {len(survivors)} survived"
    args.report.with_suffix(".summary").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
