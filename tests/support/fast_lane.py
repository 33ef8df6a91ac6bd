"""The fast lane: `pytest -m "not slow"` runs the suite minus the tests measured slow.

Which tests are slow is kept in one checked-in list, tests/slow_tests.txt, not in marks scattered
through the test files: the list is what the measurements say (a run's --durations), it is
updated in one place when they change, and the test modules stay free of bookkeeping. This
plugin reads the list and marks every test it names ``slow``; a plain `pytest` ignores the mark
and runs everything.

Two checks keep the list true:

- a line that names nothing (a file that is gone; a test that was renamed) stops the run, so the
  list never silently stops marking what it meant to;
- in the fast lane, a test not marked slow that took more than ``BUDGET_S`` seconds (setup, call
  and teardown, so a module fixture that starts a server counts against its module's first test)
  fails the run and is named, to be added to the list (or made faster).
"""

from __future__ import annotations

from pathlib import Path

import pytest

LIST_NAME = "slow_tests.txt"
# A fast-lane test may take this long, all phases together. Most take well under a second; the
# margin absorbs a loaded machine and the start of the shared session servers (tests/conftest.py).
BUDGET_S = 8.0


def read_list(path: Path) -> list[str]:
    """The node ids and module paths the list names (comments and blank lines dropped)."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append(entry)
    return entries


def names(entry: str, nodeid: str) -> bool:
    """Whether a list entry covers a test: a module path covers all its tests, a test's id all
    its parametrizations."""
    return nodeid == entry or nodeid.startswith((entry + "::", entry + "["))


def in_fast_lane(config: pytest.Config) -> bool:
    """Whether this run leaves the slow tests out (`-m "not slow"`)."""
    expression = " ".join(str(config.option.markexpr).split())
    return "not slow" in expression


class FastLane:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.list_path = Path(__file__).resolve().parents[1] / LIST_NAME
        self.entries = read_list(self.list_path)
        self.durations: dict[str, float] = {}
        self.slow: set[str] = set()
        self.over_budget: list[tuple[str, float]] = []

    # Before the "-m" deselection (tryfirst), so that it sees the marks.
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        root = self.config.rootpath
        used: set[str] = set()
        files = {item.nodeid.split("::", 1)[0] for item in items}
        for item in items:
            for entry in self.entries:
                if names(entry, item.nodeid):
                    item.add_marker(pytest.mark.slow)
                    used.add(entry)
        for item in items:
            if item.get_closest_marker("slow") is not None:
                self.slow.add(item.nodeid)
        # A test entry can only be judged when its whole module was collected, as it is when
        # pytest runs from its testpaths (a `pytest tests/x.py::one_test` collects one test).
        whole_tree = self.config.args_source == pytest.Config.ArgsSource.TESTPATHS
        stale = [
            entry
            for entry in self.entries
            if not (root / entry.split("::", 1)[0]).is_file()
            or (whole_tree and entry.split("::", 1)[0] in files and entry not in used)
        ]
        if stale:
            raise pytest.UsageError(
                f"{self.list_path.name} names tests that no longer exist (renamed or removed? "
                "update the list): " + ", ".join(stale)
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not in_fast_lane(self.config):
            return
        self.over_budget = sorted(
            (
                (nodeid, seconds)
                for nodeid, seconds in self.durations.items()
                if seconds > BUDGET_S and nodeid not in self.slow
            ),
            key=lambda pair: -pair[1],
        )
        if self.over_budget and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.over_budget:
            return
        terminalreporter.section("fast lane: tests over budget", red=True)
        terminalreporter.line(
            f"These tests are not marked slow but took more than {BUDGET_S:g} s; add them (or "
            f"their module) to tests/{LIST_NAME}, or make them faster:"
        )
        for nodeid, seconds in self.over_budget:
            terminalreporter.line(f"  {seconds:6.1f} s  {nodeid}")
