"""Where the suite's time went: each phase of scripts/test.sh (and the share of the machine's
CPU in use during it), the tests counted, and the 10 slowest tests, read from the phases'
JUnit reports (pytest --junitxml); with the CPU the integration tests recorded
(tests/integration/conftest.py: their own and their Slurm jobs'), the CPU they cost and the 10
costliest, since on 2 cores CPU, not waiting, sets the pace. Each phase's CPU is split between
the script's own process tree and the Slurm daemons; the rest of it is the jobs'.

    python scripts/test_timing.py PHASES.tsv REPORT.xml...
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


Case = tuple[str, float, bool, float]
"""A test's id, seconds, whether it passed, and the CPU seconds it recorded (0 if none)."""


def cpu_of(case: ET.Element) -> float:
    props = case.iter("property")
    return sum(float(p.get("value", 0)) for p in props if p.get("name", "").startswith("cpu_"))


def cases(reports: list[Path]) -> list[Case]:
    """Every test case the reports hold."""
    out = []
    for report in reports:
        for case in ET.parse(report).iter("testcase"):
            if case.find("skipped") is not None:
                continue
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            failed = case.find("failure") is not None or case.find("error") is not None
            out.append((name, float(case.get("time", 0)), not failed, cpu_of(case)))
    return out


def main(phases: Path, reports: list[Path]) -> None:
    rows = [[*line.split("\t"), "", "", ""][:5] for line in phases.read_text().splitlines() if line.strip()]
    total = sum(int(row[1]) for row in rows)
    ran = cases([r for r in reports if r.is_file()])
    real = [c for c in ran if c[0].startswith("tests.integration.")]
    print("\n== where the time went")
    for name, seconds, busy, tests_cpu, daemons_cpu in rows:
        # busy: the machine's CPU in use, % of all its cores; then who used it: this script's
        # process tree (pytest, CLI runs, servers) and the Slurm daemons (jobs: see below).
        line = f"  {name:<34} {minutes(int(seconds)):>8}"
        if busy:
            used = int(busy) * int(seconds) * (os.cpu_count() or 1) / 100
            line += f"   CPU busy {busy:>3}% = {used:5.0f} s"
        if tests_cpu:
            line += f"; tests' processes {tests_cpu:>4} s, Slurm daemons {max(0, int(daemons_cpu)):>3} s"
        print(line)
    print(f"  {'total':<34} {minutes(total):>8}")
    passed = sum(1 for c in ran if c[2])
    print(f"  tests: {len(ran)} run ({passed} passed), {len(real)} of them on real components (tests/integration)")
    print("== the 10 slowest tests")
    for name, seconds, *_ in sorted(ran, key=lambda c: -c[1])[:10]:
        print(f"  {seconds:7.1f} s  {name}")
    costly = sorted((c for c in real if c[3]), key=lambda c: -c[3])
    if costly:
        cpu = sum(c[3] for c in costly)
        print(f"== CPU of the integration tests: {minutes(cpu)} (theirs and their Slurm jobs'); the 10 costliest")
        for name, seconds, _, used in costly[:10]:
            print(f"  {used:7.1f} s CPU in {seconds:6.1f} s  {name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
