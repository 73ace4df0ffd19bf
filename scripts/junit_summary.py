"""Print the test counts of pytest JUnit XML reports as ``PASSED FAILED SKIPPED``.

Used by ``scripts/test-matrix.sh`` to sum up every leg and combination:

    python scripts/junit_summary.py report.xml [more.xml ...]

"Failed" counts failures and errors (collection errors included).  A missing or unreadable
report prints nothing and exits 1, so the caller can say "no report".
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def counts(path: str) -> tuple[int, int, int]:
    """Return (passed, failed, skipped) summed over the test suites of one report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    passed = failed = skipped = 0
    for suite in suites:
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
    return passed, failed, skipped


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    total = [0, 0, 0]
    try:
        for path in argv:
            for i, n in enumerate(counts(path)):
                total[i] += n
    except (OSError, ET.ParseError, ValueError):
        return 1
    print(*total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
