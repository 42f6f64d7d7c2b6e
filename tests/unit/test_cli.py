"""`mltagger validate`: a clear report and the right exit code, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mltagger.cli import main
from mltagger.core.errors import EXIT_INVALID, EXIT_USAGE


def test_valid_file_exits_zero(items_file, capsys):
    assert main(["validate", str(items_file)]) == 0
    out = capsys.readouterr().out
    assert "all 42 rows are valid" in out
    assert re.search(r"computer-vision +7\n", out)
    assert "exact duplicates (same normalised title + description): 0" in out


def test_bad_rows_are_listed_and_exit_non_zero(tmp_path, raw_items, capsys):
    rows = [*raw_items[:3], {**raw_items[3], "id": 1, "tag": "nlp"}, {"id": 77, "title": ""}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    rejects = tmp_path / "rejects.jsonl"
    assert main(["validate", str(path), "--rejects", str(rejects)]) == EXIT_INVALID
    out = capsys.readouterr().out
    assert "2 of 5 rows are invalid" in out
    assert "row 4 (id 1): id: duplicate id 1 (first seen at row 1)" in out
    assert "row 4 (id 1): tag: unknown tag 'nlp'" in out
    assert "row 5 (id 77): title: empty" in out
    assert "row 5 (id 77): created_on: missing" in out
    assert len(rejects.read_text().splitlines()) == 2


def test_unknown_data_config_is_a_usage_error(items_file, capsys):
    try:
        main(["validate", str(items_file), "--data-config", "nope"])
    except SystemExit as exit_:
        assert exit_.code == EXIT_USAGE
    assert "data config 'nope' not found" in capsys.readouterr().err


def test_missing_file_prints_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mltagger", "validate", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_USAGE
    assert "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_and_serve_subcommands_give_one_line_errors(tmp_path, capsys):
    from mltagger.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--run", str(tmp_path), "--no-screenshot"])
    assert exit_info.value.code == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", f"model_dir={tmp_path / 'none'}"])
    assert exit_info.value.code == 2
    assert "no such model folder" in capsys.readouterr().err
