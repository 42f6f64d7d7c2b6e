"""The notebooks run top to bottom against a tiny run and tiny data made in the test, so they
never rot; the strip script then removes what the run added."""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO, make_items


def execute(name: str):
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
    return nb


def outputs(nb) -> str:
    return "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
        for c in nb.cells
        for o in c.get("outputs", [])
    )


def test_error_analysis_notebook_runs_on_a_run_folder(trained, monkeypatch):
    monkeypatch.setenv("MLTAGGER_RUN", str(trained / "run" / "model"))
    monkeypatch.setenv("MLTAGGER_MIN_SLICE", "1")
    monkeypatch.setenv("MLTAGGER_ROOT", str(REPO))
    nb = execute("error_analysis")
    text = outputs(nb)
    assert "meets_target" in text  # the headline
    assert "ci_low" in text and "auto_precision" in text  # per-tag table
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))


def test_data_exploration_notebook_runs_on_a_data_config(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    items = tmp_path / "items.json"
    items.write_text(json.dumps(make_items()))
    cfg = OmegaConf.load(REPO / "conf" / "data" / "projects.yaml")
    cfg.sources = [{"name": "tiny", "path": str(items), "sha256": None}]
    cfg.min_freq = 2
    cfg.split = {"val_size": 0.2, "test_size": 0.2, "seed": 0}
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(cfg, path)
    monkeypatch.setenv("MLTAGGER_DATA", str(path))
    monkeypatch.setenv("MLTAGGER_ROOT", str(REPO))
    nb = execute("data_exploration")
    text = outputs(nb)
    assert "(42," in text  # all items across splits
    assert "near_duplicate_groups" in text and "short_text" in text
    assert "computer-vision" in text


def test_strip_script_removes_what_a_run_added(tmp_path):
    import subprocess
    import sys

    nb = nbformat.read(REPO / "notebooks" / "error_analysis.ipynb", as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.cells[1].execution_count = 3
    path = tmp_path / "dirty.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run(
        [sys.executable, "scripts/strip_notebooks.py", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "stripped" in proc.stdout
    clean = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in clean.cells if c.cell_type == "code")
    assert clean.cells[1].execution_count is None
