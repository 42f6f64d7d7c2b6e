"""Three hostile configs through the real command (`python -m mltagger ...` in a subprocess), as
a user meets them: one line on stderr, exit 2, no traceback, no run folder, within seconds. The
full table of groups and wrong overrides runs in-process in tests/unit/core/test_hostile_configs.py.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_job

CASES = [
    # The repro: an action without a layer used to end in a TypeError in resolve_path.
    (
        "train",
        "data.label_noise.layer=null",
        "error: data.label_noise.layer=null: data.label_noise.action=relabel needs the "
        "label-issue layer file",
    ),
    # A key the config does not have: Hydra's several lines and exit 1 before.
    ("train", "trainer.epochs=3", "error: bad config override: Could not override"),
    ("export", "batch_size=0", "error: batch_size=0: expected an integer >= 1"),
]


@pytest.mark.parametrize(("job", "override", "line"), CASES)
def test_a_hostile_override_is_one_line_and_exit_2(tmp_path, job, override, line):
    start = time.perf_counter()
    proc = run_job(
        job,
        override,
        "logger=none" if job == "train" else f"teacher={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run folder
    assert time.perf_counter() - start < 60
