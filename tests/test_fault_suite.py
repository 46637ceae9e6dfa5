"""Issue 15's fault suite, `python benchmarks/fault_suite.py --quick`, passes end to end.

It trains and exports a tiny model, serves it on loopback and throws its faults at it (about a
minute and a half on two cores, most of it the demo fit and export), hence `slow`.
"""

import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_suite.py"


@pytest.mark.slow
def test_quick_fault_suite_passes(tmp_path):
    result = subprocess.run([sys.executable, str(SUITE), "--quick", "--out", str(tmp_path / "suite")],
                            capture_output=True, text=True, timeout=900, check=False)
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    table = result.stdout[result.stdout.index("fault "):]
    rows = [line for line in table.splitlines() if line.count(" | ") == 3 and not line.startswith("fault ")]
    assert len(rows) >= 10, report  # faults 1-6 and 8-10, plus the server's SIGTERM exit
    assert all(line.endswith(("| yes", "| known")) for line in rows), report
    assert "server peak RSS (VmHWM)" in result.stdout
