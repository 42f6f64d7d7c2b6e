"""The front door holds: every job is declared once (mltagger.jobs) and what is generated from
the table is current; every `make` line the README and the docs quote still dry-runs; a missing
required variable still stops with its one-line usage; every target `make help` lists has its row
in docs/commands.md; and every script and study the docs quote still answers `--help`.

All fast: `make -n` (about 10 ms a line) and the scripts run in this process."""

from __future__ import annotations

import importlib.util
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mltagger import cli
from mltagger.jobs import COMMAND, HYDRA, JOBS, render_make, render_markdown
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `make -n` with the install stamp taken as done (-o): the dry run prints, never installs.
STAMPS = ["-o", ".venv/.installed-cpu", "-o", ".venv/.installed-gpu"]
DRY = ["make", "--no-print-directory", "-n", *STAMPS]
TOOLS = sorted((REPO / "scripts").glob("*.py")) + sorted((REPO / "docs" / "studies").glob("*.py"))


def quoted_make_lines() -> list[str]:
    """`make …` as README.md and docs/*.md quote it: inline code and lines of code blocks."""
    found: list[str] = []
    for path in DOCS:
        text = path.read_text()
        found += re.findall(r"`(make [^`\n]+)`", text)
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
            found += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("make ")]
    commands = []
    for line in found:
        line = re.sub(r"\s+#.*$", "", line)  # a trailing comment
        commands += [c.strip() for c in line.split("&&")]
    return sorted(set(commands))


def make_argv(command: str) -> list[str] | None:
    """The dry-run argument list of a quoted command (None for a placeholder like <target>):
    `…` stands for a value, `[VAR=…]` is an optional variable given."""
    words = shlex.split(command.replace("…", "x"))[1:]
    if any(w.startswith("<") for w in words):
        return None
    return [re.sub(r"^\[([A-Z_]+=.*)\]$", r"\1", w) for w in words]


def test_docs_quote_make_lines_to_check():
    lines = quoted_make_lines()
    assert len(lines) > 50 and "make simulate-stream" in lines


@pytest.mark.parametrize("command", quoted_make_lines())
def test_every_quoted_make_line_dry_runs(command):
    argv = make_argv(command)
    if argv is None:
        pytest.skip("a placeholder, not a command")
    proc = subprocess.run([*DRY, *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{command}: {proc.stdout[-500:]}{proc.stderr[-1000:]}"


@pytest.mark.parametrize("job", [j for j in JOBS.values() if j.needs], ids=lambda j: j.name)
def test_a_missing_required_variable_prints_the_usage_even_in_a_dry_run(job):
    proc = subprocess.run([*DRY, job.name], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert job.usage in proc.stdout.splitlines()
    assert f"mltagger {job.name}" not in proc.stdout  # it stopped before the job


def help_targets() -> list[str]:
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    return [line.split()[0] for line in plain.splitlines() if line.strip()]


def test_every_target_make_help_lists_is_in_docs_commands():
    targets = help_targets()
    assert {"train", "simulate-stream", "install", "test", "help"} <= set(targets)
    page = (REPO / "docs" / "commands.md").read_text()
    missing = [t for t in targets if f"`make {t}" not in page and f"/ `make {t}`" not in page]
    assert not missing, f"targets without a row in docs/commands.md: {missing}"


def test_the_generated_jobs_table_of_docs_commands_is_current():
    page = (REPO / "docs" / "commands.md").read_text()
    begin = "<!-- jobs: generated from src/mltagger/jobs.py by scripts/docs_pages.py -->\n"
    table = page.split(begin, 1)[1].split("<!-- end of the generated jobs table -->", 1)[0]
    assert table == render_markdown(), "stale: run `python scripts/docs_pages.py`"


def test_every_job_target_and_check_names_a_function():
    """Without importing the jobs (torch and all): the module exists and defines the name."""
    for job in JOBS.values():
        names = [job.target, job.check, job.options]
        for name in filter(None, names):
            module, _, func = name.partition(":")
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin, f"{job.name}: no module {module}"
            assert f"def {func}(" in Path(spec.origin).read_text(), f"{job.name}: {name}"
        assert (job.kind == HYDRA) == bool(job.config and job.kind != COMMAND)
        assert job.kind != COMMAND or job.options, job.name


def test_mltagger_help_and_the_makefile_list_every_job():
    text = cli.build_parser().format_help()
    assert all(name in text for name in JOBS)
    rules = render_make()
    assert all(f"{j.name}_ARGS = " in rules for j in JOBS.values() if j.make is not None)


def quoted_tools() -> set[str]:
    """Scripts and studies README.md and docs/*.md run as `python <path>.py`."""
    found = set()
    for path in DOCS:
        found |= set(
            re.findall(r"python\s+((?:scripts|docs/studies)/[\w/]+\.py)", path.read_text())
        )
    return found


def test_every_quoted_script_or_study_exists():
    quoted = quoted_tools()
    assert "docs/studies/ablation.py" in quoted
    missing = sorted(q for q in quoted if not (REPO / q).is_file())
    assert not missing, missing


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_and_study_answers_help(path, monkeypatch, capsys):
    """Run as the docs run it (`python <path> --help`), in this process: it imports and parses."""
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(path), run_name="__main__")
    assert stop.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out
