"""`soul bench`'s scenarios are one list (serve_app/bench/__init__.py): the command's choices,
its help and its dispatch come from it, and no bench module imports every scenario."""

from __future__ import annotations

import argparse
import ast
import inspect
from importlib import import_module
from pathlib import Path

import pytest

from serve_app import cli
from serve_app.bench import BY_NAME, SCENARIOS, Scenario, main

BENCH = Path(__file__).resolve().parents[2] / "serve_app" / "bench"
ran: list[argparse.Namespace] = []


def fake_scenario(ns: argparse.Namespace) -> int:
    ran.append(ns)
    return 7


def test_every_scenario_names_an_entry_that_takes_the_arguments() -> None:
    assert len(BY_NAME) == len(SCENARIOS)
    for scenario in SCENARIOS:
        module, _, function = scenario.entry.partition(":")
        entry = getattr(import_module(module), function)
        assert list(inspect.signature(entry).parameters) == ["ns"], scenario.name


def test_soul_bench_offers_exactly_the_registered_scenarios() -> None:
    [bench] = [
        action.choices["bench"]
        for action in cli.parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    [scenario] = [a for a in bench._actions if a.dest == "scenario"]
    assert list(scenario.choices or []) == [s.name for s in SCENARIOS]
    assert all(f"{s.name}: {s.help}" in (scenario.help or "") for s in SCENARIOS)
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["bench", "no-such-scenario"])


def test_main_runs_the_named_scenarios_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Scenario("fake", "a stand-in", f"{__name__}:fake_scenario")
    monkeypatch.setitem(BY_NAME, "fake", fake)
    ns = argparse.Namespace(scenario="fake")
    assert main(ns) == 7 and ran == [ns]


def test_no_bench_module_imports_the_scenarios_it_serves() -> None:
    """The registry names entries by path and ``common`` serves them: neither imports one."""
    scenarios = {s.entry.partition(":")[0] for s in SCENARIOS}
    for name in ("__init__.py", "common.py"):
        tree = ast.parse((BENCH / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & scenarios, f"{name} imports {imported & scenarios}"
