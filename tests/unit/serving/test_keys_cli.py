"""`mltagger keys` as a user types it: the store override after the options, the key printed
once and found by the service's lookup, and every mistake one line with exit 2."""

from __future__ import annotations

import pytest

from mltagger.serving.keys import find_key, main
from mltagger.serving.store import Store


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_list_revoke_with_the_store_given_after_the_options(tmp_path, capsys):
    url = f"store.url=sqlite:///{tmp_path / 'k.db'}"
    code, out, _ = run(capsys, "create", "ana", "--role", "review", url)
    assert code == 0
    secret = out.strip().splitlines()[-1]
    store = Store(url.split("=", 1)[1])
    try:
        key = find_key(store.engine, secret)
        assert (key.name, key.role) == ("ana", "review")
        code, out, _ = run(capsys, "list", url)
        assert code == 0 and "ana" in out and "review" in out and secret not in out
        assert run(capsys, "revoke", "ana", url)[0] == 0
        assert find_key(store.engine, secret) is None
    finally:
        store.close()


def test_end_sessions_says_how_many_it_ended(tmp_path, capsys):
    from mltagger.serving.keys import REVIEW, create_key
    from mltagger.serving.sessions import create_session, find_session

    url = f"store.url=sqlite:///{tmp_path / 'k.db'}"
    store = Store(url.split("=", 1)[1])
    try:
        key = find_key(store.engine, create_key(store.engine, "ana", REVIEW)[1])
        tokens = [create_session(store.engine, key, 60)[0] for _ in range(2)]
        code, out, _ = run(capsys, "end-sessions", "--key", "ana", url)
        assert code == 0 and "ended 2 web sessions of key ana" in out
        assert [find_session(store.engine, t, None) for t in tokens] == [None, None]
        assert run(capsys, "end-sessions", url)[1].startswith("ended 0 web sessions in")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "bob", "--role", "boss"], "invalid choice: 'boss'"),
        (["revoke", "nobody"], "no key named 'nobody'"),
        (["list", "bogus"], "unrecognized arguments: bogus"),
        (["list", "store.url=nonsense://x"], "store.url='nonsense://x'"),
        (["end-sessions", "--key", "nobody"], "no key named 'nobody'"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    if not any(a.startswith("store.url=") for a in argv):
        argv = [*argv, f"store.url=sqlite:///{tmp_path / 'k.db'}"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err, err
