"""The docs site builds with --strict (no broken link, no page missing from the nav) and its
generated pages (API reference, home page) match the code and the README they come from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_generated_pages_are_current():
    proc = subprocess.run(
        [sys.executable, "scripts/docs_pages.py", "--check"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    proc = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_the_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150
