"""`mltagger probe` refuses what it must not do, in one line and exit 2: a target off this
machine, no key, a service that is not there. (The probe itself runs in tests/e2e/test_probe.py.)"""

from __future__ import annotations

import pytest

from mltagger.benchmarks.probe import main
from tests.e2e.test_serve import free_port


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--url", "http://example.org:80", "--key", "k"], "the probe stays on this machine"),
        (["--url", "https://127.0.0.1:8000", "--key", "k"], "give http://127.0.0.1:PORT"),
        (["--url", "http://127.0.0.1:8000"], "--key: give an admin key"),
        (["--key", "k", "--requests", "0"], "must be positive"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(capsys, monkeypatch, argv, says):
    monkeypatch.delenv("MLTAGGER_API_KEY", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and "Traceback" not in err, err


def test_a_service_that_is_not_there_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--url", f"http://127.0.0.1:{free_port()}", "--key", "k"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "is `mltagger serve` running?" in err
    assert len(err.splitlines()) == 1
