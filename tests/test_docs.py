"""The documentation names only flags that exist, and its benchmark section is generated from the result files."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

from study_admin.cli import build_parser as study_admin_parser
from tests.conftest import REPO
from worker.config import build_parser as worker_parser

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
# Flags of other tools that the docs show in their commands.
OTHER_TOOLS = {
    "--scale": "docker compose up",
    "--no-deps": "docker compose up/run",
    "--rm": "docker compose run",
    "--replicas": "kubectl scale",
    "--index-url": "pip install",
    "--strict": "kubernetes-validate",
    "--conf-file": "python -m rl_zoo3.train",
}
BENCHMARKS = ("versus_zoo.py", "fleet.py", "report.py", "throughput.py")


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    found = {flag for action in parser._actions for flag in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _flags(sub)
    return found


def _benchmark_flags() -> set[str]:
    found: set[str] = set()
    for script in BENCHMARKS:
        shown = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--help"], capture_output=True,
                               text=True, check=True, cwd=REPO).stdout  # fmt: skip
        found |= set(FLAG.findall(shown))
    return found


def test_every_flag_the_docs_name_exists() -> None:
    ours = _flags(study_admin_parser()) | _flags(worker_parser()) | _benchmark_flags()
    named = {(doc.name, flag) for doc in DOCS for flag in FLAG.findall(doc.read_text())}
    assert named, "the docs name no flag at all"
    unknown = sorted((doc, flag) for doc, flag in named if flag not in ours and flag not in OTHER_TOOLS)
    assert unknown == []
    assert "--no-such-flag" not in ours  # positive control: the check can fail


def test_the_readme_benchmark_section_is_generated_from_the_results() -> None:
    check = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report.py"), "--check"], capture_output=True,
                           text=True, cwd=REPO)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
