"""Prints which documentation examples ran and which were only parsed (tests/docs/test_commands.py)."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    reports = [r for reports in terminalreporter.stats.values() for r in reports
               if hasattr(r, "when") and r.nodeid.startswith("tests/docs/test_commands.py::test_command_runs")]
    if not reports:
        return
    from docs.test_commands import summary_lines

    terminalreporter.section("documentation examples (tests/docs/test_commands.py)")
    for line in summary_lines():
        terminalreporter.write_line(line)
