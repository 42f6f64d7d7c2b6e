"""`make simulate-stream` on a fresh clone: it builds the models it lacks (the served model and
the worse candidate) after saying how long, and a folder the user named that is missing is one
line naming the command that makes it. No training here: the steps are recorded, not run."""

from __future__ import annotations

import subprocess

import pytest

from mltagger.core.config import compose_config
from mltagger.core.errors import DataError, user_errors
from mltagger.monitoring import simulate


@pytest.fixture
def fresh_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTAGGER_ROOT", str(tmp_path))  # no models/, no runs/
    return tmp_path


def test_a_fresh_clone_builds_the_served_model_then_the_candidate(fresh_root):
    steps = simulate.missing_models(compose_config("serve", []), simulate.CANDIDATE)
    assert [(folder, args[0]) for folder, args, _ in steps] == [
        ("models/latest", "train"),
        ("models/export", "export"),
        ("runs/sim/worse/model", "train"),
    ]
    assert "data=with_other" in steps[2][1] and "update_latest=false" in steps[2][1]
    (fresh_root / "models" / "latest").mkdir(parents=True)  # trained already: export only
    steps = simulate.missing_models(compose_config("serve", []), simulate.CANDIDATE)
    assert [folder for folder, _, _ in steps] == ["models/export", "runs/sim/worse/model"]


@pytest.mark.parametrize(
    ("overrides", "candidate", "says"),
    [
        (["model_dir=models/mine"], simulate.CANDIDATE, "model_dir=models/mine: no such model"),
        ([], "runs/other/model", "--candidate runs/other/model: no such model folder"),
    ],
)
def test_a_missing_folder_the_user_named_is_one_line(fresh_root, overrides, candidate, says):
    with pytest.raises(DataError, match=says):
        simulate.missing_models(compose_config("serve", overrides), candidate)


def test_it_says_how_long_first_and_stops_on_a_failed_step(fresh_root, monkeypatch, capsys):
    calls = []

    def run(argv, cwd, check):
        calls.append(argv[3:])
        return subprocess.CompletedProcess(argv, 1 if argv[3] == "export" else 0)

    monkeypatch.setattr(simulate.subprocess, "run", run)
    steps = simulate.missing_models(compose_config("serve", []), simulate.CANDIDATE)
    with pytest.raises(SystemExit) as stop, user_errors():
        simulate.build_models(steps, fresh_root)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert "building them first, about 18 minutes on 2 cores" in first
    assert calls == [["train"], ["export"]]  # the candidate is not trained after a failure
    assert err.strip() == "error: `mltagger export` failed (exit 1)"
