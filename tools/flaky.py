"""Run strict nbval over notebooks/ and solutions/ several times; report cells that change.

    python3 tools/course.py flaky            # 3 runs
    python3 tools/course.py flaky 5 notebooks/03_circular_pool.ipynb

A cell is flaky when its result (passed, failed, skipped) is not the same in every run, or
when it fails in any run. Exit code 0 only when every cell passed in every run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def outcomes(junit: Path) -> dict[str, str]:
    """{'notebooks/00_x.ipynb::Cell 3': 'passed' | 'failed' | 'skipped'} from a JUnit XML file."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('file') or case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            result[name] = "failed"
        elif case.find("skipped") is not None:
            result[name] = "skipped"
        else:
            result[name] = "passed"
    return result


def report(runs: list[dict[str, str]]) -> list[str]:
    """Lines naming every cell whose outcome differs between runs or that ever failed."""
    seen: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        for name in set().union(*runs):
            seen[name].append(run.get(name, "missing"))
    return [f"{name}: {' / '.join(results)}" for name, results in sorted(seen.items())
            if len(set(results)) > 1 or "failed" in results or "missing" in results]


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    count = int(argv[0]) if argv and argv[0].isdigit() else 3
    targets = [a for a in argv if not a.isdigit()] or ["notebooks", "solutions"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(count):
            junit = Path(tmp) / f"run{k}.xml"
            code = subprocess.call([sys.executable, "-m", "pytest", *targets, "-q", "-p",
                                    "no:randomly", f"--junitxml={junit}"], cwd=ROOT)
            runs.append(outcomes(junit))
            print(f"run {k + 1}/{count}: exit code {code}, {len(runs[-1])} cells", flush=True)
    lines = report(runs)
    if lines:
        print(f"{len(lines)} cells did not pass in every one of {count} runs:")
        print("\n".join(lines))
        return 1
    print(f"every cell passed in all {count} runs ({len(runs[0])} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
