"""Scenarios: broken machines to fix from a real terminal (``labkit scenario``).

Each scenario starts a live broken situation (real processes, files, cgroups), tells a short
story, judges the live state with ``check`` and removes everything with ``reset``. See
:mod:`labkit.scenarios.base` for what a scenario is, :mod:`labkit.scenarios.engine` for how one
runs (start, check, hint, give_up, reset, results) and :mod:`labkit.scenarios.cli` for the command.
Only the light base is imported here: the scenario's own processes (``_actors``, ``_keeper``) run
as ``python -m labkit.scenarios.X`` and load this file first.
"""

from labkit.scenarios.base import CannotRun, Context, NoActiveScenario, Scenario, ScenarioActive, ScenarioError

__all__ = ["CannotRun", "Context", "NoActiveScenario", "Scenario", "ScenarioActive", "ScenarioError"]
