"""The guards that keep a model to the approved tags: modelio's own (labels outside the list a
folder is given), and the store's list, which the service, a promote and a reload obey whatever
the folder's `inference.json` declares."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa

from mltagger.models.modelio import (
    LABELS_FILE,
    InferenceConfig,
    ModelNotAvailable,
    read_model_metadata,
    write_model_metadata,
)
from mltagger.models.tag_rule import ACTIVE, PENDING, TagListError
from mltagger.serving.rollout import RolloutError, promote, record_deployment
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store, deployments
from mltagger.serving.tag_list import TagList
from mltagger.serving.tags_cli import main as tags_main
from tests.conftest import TAGS
from tests.fakes import FakePredictor, make_model_folder, write_screen

QUANTUM = "quantum-computing"


def folder_with(path, labels, approved=None):
    """A model folder whose own metadata declares `approved` (default: its labels)."""
    write_model_metadata(
        path,
        list(labels),
        InferenceConfig(
            threshold=0.5, approved_tags=list(approved or labels), model_version=path.name
        ),
    )
    return path


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def test_modelio_refuses_to_write_labels_outside_the_list_it_is_given(tmp_path):
    with pytest.raises(ValueError, match=QUANTUM):
        write_model_metadata(
            tmp_path / "m", [*TAGS, QUANTUM], InferenceConfig(threshold=0.5, approved_tags=TAGS)
        )
    assert not (tmp_path / "m" / LABELS_FILE).exists()


def test_modelio_refuses_to_read_labels_outside_the_folders_list(tmp_path):
    folder = make_model_folder(tmp_path / "m")
    (folder / LABELS_FILE).write_text(json.dumps({"labels": [*TAGS[:-1], QUANTUM]}))
    with pytest.raises(ModelNotAvailable, match=QUANTUM):
        read_model_metadata(folder)


def test_the_service_refuses_a_folder_that_approves_its_own_extra_tag(tmp_path, store):
    folder = folder_with(tmp_path / "quantum", [*TAGS, QUANTUM])
    assert QUANTUM in read_model_metadata(folder)[1].approved_tags  # the folder vouches for it
    with pytest.raises(TagListError, match=rf"{QUANTUM} \(not in the list\)"):
        Tagger(FakePredictor(folder), store, screen_file=write_screen(tmp_path / "s.json"))
    with pytest.raises(TagListError, match=QUANTUM):
        record_deployment(store.engine, folder, "promote", actor="ana")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(deployments)).scalar() == 0
    assert QUANTUM not in TagList(store.engine).statuses()


def test_a_start_with_a_model_answering_a_pending_tag_activates_it(tmp_path, store):
    tags = TagList(store.engine)
    tags.add(QUANTUM, "ana")
    Tagger(FakePredictor(make_model_folder(tmp_path / "m")), store, dedup=False)
    assert tags.statuses()[QUANTUM] == PENDING  # the seven-tag model does not answer it
    folder = folder_with(tmp_path / "q", [*TAGS, QUANTUM])
    Tagger(FakePredictor(folder), store, dedup=False)
    assert tags.statuses()[QUANTUM] == ACTIVE
    event = tags.history(limit=1)[0]
    assert (event["tag"], event["action"], event["actor"]) == (QUANTUM, ACTIVE, "system")


def test_a_reload_the_list_refuses_keeps_the_current_model(tmp_path, store, caplog):
    current = make_model_folder(tmp_path / "m")
    tagger = Tagger(FakePredictor(current), store, dedup=False, loader=FakePredictor)
    bad = folder_with(tmp_path / "quantum", [*TAGS, QUANTUM])
    with store.engine.begin() as conn:  # as an mltagger without the list would record it
        conn.execute(deployments.insert().values(model_dir=str(bad), action="promote",
                                                 created_at=sa.func.now()))  # fmt: skip
    with caplog.at_level(logging.ERROR):
        tagger.reload_now()
        tagger.reload_now()
    assert tagger.predictor.folder == current
    assert sum(QUANTUM in r.getMessage() for r in caplog.records) == 1  # logged once
    assert tagger.analyze([{"title": "Image segmentation", "description": "", "text": "image"}])


def test_promote_asks_the_list_and_may_add_a_tag(tmp_path, store):
    current = make_model_folder(tmp_path / "m")
    link = tmp_path / "export"
    link.symlink_to(current)
    wider = folder_with(tmp_path / "q", [*TAGS, QUANTUM])
    tags = TagList(store.engine)
    check = tags.check
    with pytest.raises(RolloutError, match="same tags"):  # without the list: labels must match
        promote(link, wider)
    with pytest.raises(TagListError, match=QUANTUM):
        promote(link, wider, lambda labels: check(labels, "candidate"))
    assert link.resolve() == current.resolve()
    tags.add(QUANTUM, "ana")
    promote(link, wider, lambda labels: check(labels, "candidate"))
    record_deployment(store.engine, link.resolve(), "promote", actor="bo")
    assert link.resolve() == wider.resolve() and tags.statuses()[QUANTUM] == ACTIVE


def run_cli(capsys, *argv):
    try:
        code = tags_main(list(argv))
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tags_cli_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys):
    url = f"store.url=sqlite:///{tmp_path / 'k.db'}"
    model = f"model_dir={make_model_folder(tmp_path / 'm')}"
    assert run_cli(capsys, "--by", "ana", "add", "audio", "--description", "sound", url)[0] == 0
    code, out, _ = run_cli(capsys, "list", url, model)
    assert code == 0 and "audio" in out and "pending" in out and "ana" in out
    before = run_cli(capsys, "history", url)[1]
    for argv, words in [
        (("add", "mlops"), "already in the list (active)"),
        (("add", "Not Kebab"), "kebab-case"),
        (("remove", "mlops"), "answered by the serving model fake-1; retire it first"),
        (("retire", "nope"), "no tag 'nope'"),
    ]:
        code, out, err = run_cli(capsys, "--by", "bo", *argv, url, model)
        assert code == 2 and out == "" and words in err and err.count("\n") == 1, argv
    assert run_cli(capsys, "history", url)[1] == before
    assert run_cli(capsys, "remove", "audio", url, model)[0] == 0
