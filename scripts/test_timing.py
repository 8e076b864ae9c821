"""Where the suite's time went: each phase of scripts/test.sh, the tests counted, and the
10 slowest tests, read from the phases' JUnit reports (pytest --junitxml).

    python scripts/test_timing.py PHASES.tsv REPORT.xml...
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def cases(reports: list[Path]) -> list[tuple[str, float, bool]]:
    """(test id, seconds, passed) of every test case the reports hold."""
    out = []
    for report in reports:
        for case in ET.parse(report).iter("testcase"):
            if case.find("skipped") is not None:
                continue
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            failed = case.find("failure") is not None or case.find("error") is not None
            out.append((name, float(case.get("time", 0)), not failed))
    return out


def main(phases: Path, reports: list[Path]) -> None:
    rows = [line.split("\t") for line in phases.read_text().splitlines() if line.strip()]
    total = sum(int(seconds) for _, seconds in rows)
    ran = cases([r for r in reports if r.is_file()])
    real = [c for c in ran if c[0].startswith("tests.integration.")]
    print("\n== where the time went")
    for name, seconds in rows:
        print(f"  {name:<34} {minutes(int(seconds)):>8}")
    print(f"  {'total':<34} {minutes(total):>8}")
    passed = sum(1 for c in ran if c[2])
    print(f"  tests: {len(ran)} run ({passed} passed), {len(real)} of them on real components (tests/integration)")
    print("== the 10 slowest tests")
    for name, seconds, _ in sorted(ran, key=lambda c: -c[1])[:10]:
        print(f"  {seconds:7.1f} s  {name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
