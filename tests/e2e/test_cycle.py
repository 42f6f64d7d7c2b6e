"""`mltagger cycle` end to end with the tiny trained model, a real SQLite store and the real
service code: labels -> dataset -> warm start -> gates -> shadow -> canary -> promotion ->
watch, every worker following the store's rollout rows; a run killed after each step ends in
the same state as one never killed; the bad inputs of the issue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from omegaconf import OmegaConf

from mltagger.core.config import compose_config
from mltagger.cycle import gates as G
from mltagger.cycle import run as R
from mltagger.models.modelio import read_model_metadata, write_model_metadata
from mltagger.models.predict import Predictor
from mltagger.serving.cycles import (
    CycleBusy,
    acquire_lock,
    current_rollout,
    events,
    release_lock,
)
from mltagger.serving.rollout import deployed
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.tables import cycles, deployments, rollouts
from tests.conftest import (
    LEARN,
    REPO,
    gold_soft_labels,
    make_learnable_items,
    run_job,
    tiny_train_overrides,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def champion(trained, tiny_model_dir, tmp_path_factory):
    """The tiny trained model with what a shipped recipe names: an out-of-fold file (here the
    model's own scores of its train+val items: a stand-in, the format is what matters) and the
    teacher soft labels of its data; plus that data config."""
    from hydra import compose, initialize_config_dir

    from mltagger.data.prepare import prepare_data
    from mltagger.training.teacher import pool_items

    tmp = tmp_path_factory.mktemp("champion")
    overrides = tiny_train_overrides(trained, trained / "items.json", tiny_model_dir, *LEARN)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[o for o in overrides if o.startswith("data")])
    data = prepare_data(cfg.data, REPO)
    folder = tmp / "model"
    shutil.copytree(trained / "run" / "model", folder)
    pred = Predictor(folder)
    rows = pool_items(data)
    probs = pred.predict_proba([r["text"] for r in rows])
    oof = tmp / "oof.json"
    oof.write_text(
        json.dumps(
            {
                "oof": [
                    {
                        "id": r["id"],
                        "gold": r["tag"],
                        "scores": dict(zip(pred.labels, map(float, p), strict=True)),
                    }
                    for r, p in zip(rows, probs, strict=True)
                ]
            }
        )
    )
    labels, inference = read_model_metadata(folder)
    decision = {
        "oof_file": str(oof),
        "precision_target": 0.8,
        "tag_rule": "pooled",
        "prior": {"strength": 20.0},
    }
    inference.extra["decision"] = decision
    write_model_metadata(folder, labels, inference)
    soft = tmp / "soft.json"
    soft.write_text(json.dumps(gold_soft_labels(overrides)))
    return {"folder": folder, "data": cfg.data, "soft": soft}


# The tests that are not about the export leave its parity gate out (the full-cycle test runs it).
FAST = {"export_parity": "false"}


def make_cfg(tmp: Path, champion: dict, **cycle) -> object:
    """Small windows for a tiny stream; the shadow and canary limits are opened wide (their
    rules are tested in tests/unit/cycle), so these tests follow the state machine itself."""
    cfg = compose_config(
        "serve",
        [
            f"store.url=sqlite:///{tmp / 'store.db'}",
            f"model_dir={champion['folder']}",
            f"cycle.folder={tmp / 'cycles'}",
            f"cycle.datasets={tmp / 'datasets'}",
            f"cycle.soft_labels={champion['soft']}",
            "cycle.behaviour=false",
            "cycle.labels.recent=10",
            "cycle.labels.min_train=5",
            "cycle.labels.min_batch=1000",
            "cycle.train.min_rehearsal=16",
            "cycle.train.passes=1",
            "cycle.shadow_items=5",
            "cycle.canary_author_items=5",
            "cycle.canary_audit_items=2",
            "cycle.canary_percent=50",
            "cycle.max_shadow_disagreement=1.0",
            "cycle.canary_margin=1.0",
            "cycle.watch_items=5",
            "cycle.watch_windows=1",
            "cycle.watch_max_disagreement=1.0",
            "cycle.wandb_mode=disabled",
            *[f"cycle.{k}={v}" for k, v in cycle.items()],
        ],
    )
    OmegaConf.set_struct(cfg, False)
    cfg.cycle.data_config = champion["data"]
    return cfg


def stream(start: int, n: int, author: bool = False) -> list[dict]:
    """New wordings of the tiny topics (never a copy of a test or fresh item)."""
    base = make_learnable_items()
    out = []
    for k in range(start, start + n):
        it = base[k % len(base)]
        out.append(
            {
                **prepare(
                    f"{it['title']} (stream {k})",
                    it["description"],
                    author_tag=it["tag"] if author else None,
                ),
                "gold": it["tag"],
            }
        )
    return out


def ingest_and_review(tagger: Tagger, rows: list[dict], review: bool = True) -> list[int]:
    tagger.reload_now()
    out = tagger.add(rows, source="test")
    tagger.wait_for_shadow()
    ids = [o.item_id for o in out]
    if review:
        for k, (i, r) in enumerate(zip(ids, rows, strict=True)):
            tagger.store.review(i, r["gold"], reviewer=f"r{k % 2}")
    return ids


def review_audited(tagger: Tagger, ids: list[int], rows: list[dict]) -> None:
    for i, r in zip(ids, rows, strict=True):
        if tagger.store.get_item(i)["audit"]:
            tagger.store.review(i, r["gold"], reviewer="auditor")


def state(ctx) -> dict:
    """What a finished or waiting cycle leaves: comparable between a killed and a clean run."""
    with ctx.engine.connect() as conn:
        cyc = conn.execute(sa.select(cycles)).all()
        rolls = [r.mode for r in conn.execute(sa.select(rollouts).order_by(rollouts.c.id))]
        deps = conn.execute(sa.select(sa.func.count()).select_from(deployments)).scalar()
    return {
        "cycles": [(c.step, c.status, c.outcome, c.labels_sha256) for c in cyc],
        "rollouts": rolls,
        "deployments": deps,
        "datasets": sorted(p.name for p in Path(ctx.s.datasets).glob("v*.json")),
        "challengers": sum(1 for _ in Path(ctx.s.folder).glob("*/challenger/model.safetensors")),
    }


@pytest.fixture
def passing_paired(monkeypatch):
    """The tiny model cannot show a measurable gain on ten items; these flow tests are about
    the state machine, so the paired gate's verdict is fixed to pass (its own tests are in
    tests/unit/cycle)."""
    real = G.paired_recent

    def paired(*args, **kw):
        gate, figures = real(*args, **kw)
        return {**gate, "status": G.PASS}, figures

    monkeypatch.setattr(G, "paired_recent", paired)


def test_no_labels_then_a_full_cycle_to_promotion(tmp_path, champion, passing_paired):
    cfg = make_cfg(tmp_path, champion)
    ctx = R.make_context(cfg, say=lambda s: None)
    assert R.run_cycle(ctx) == {"status": "no_new_labels"}
    assert state(ctx)["cycles"] == []  # nothing changed
    tagger = Tagger(
        Predictor(champion["folder"]), ctx.store, dedup=False, audit_share=1.0, loader=Predictor
    )
    ingest_and_review(tagger, stream(0, 30))
    out = R.run_cycle(ctx)
    assert out["status"] == "waiting" and out["step"] == "shadow", out
    # every worker follows the store's rollout row: the challenger now runs in shadow
    rows = stream(100, 8, author=True)
    ids = ingest_and_review(tagger, rows, review=False)
    assert tagger.rollout.mode == "shadow" and tagger.candidate is not None
    assert all(tagger.store.get_item(i)["shadow"] for i in ids)
    out = R.run_cycle(ctx)
    assert out.get("step") == "canary", out
    rows = stream(200, 12, author=True)
    ids = ingest_and_review(tagger, rows, review=False)
    assert tagger.rollout.mode == "canary"
    review_audited(tagger, ids, rows)
    out = R.run_cycle(ctx)
    assert out.get("step") == "watch", out
    challenger = Path(ctx.s.folder).glob("*/challenger")
    assert deployed(ctx.engine) == next(challenger).resolve()
    ids = ingest_and_review(tagger, stream(300, 8, author=True), review=False)
    assert tagger.predictor.folder.name == "challenger"  # the promotion reached the worker
    assert Path(tagger.candidate.folder) == champion["folder"].resolve()  # old one in shadow
    out = R.run_cycle(ctx)
    assert out["outcome"] == "promoted", out
    assert current_rollout(ctx.engine)["mode"] == "off"
    names = [e["name"] for e in events(ctx.engine, 200)[::-1] if e["kind"] == "gate"]
    for g in (
        "labels.one_reviewer",
        "recipe.soft_labels",
        "recipe.operating_points",
        "tag_precision",
        "recent.paired",
        "oos.harm",
        "export.parity",
        "shadow.disagreement",
        "canary.author_agreement",
        "canary.audit_precision",
        "watch.window",
    ):
        assert g in names
    folder = next(Path(ctx.s.folder).glob("*/report.md"))
    assert "| export.parity | pass |" in folder.read_text()
    # the audit reviews of the canary are new labels: a second cycle runs on them; after it,
    # the same labels again: nothing new, nothing done
    second = R.run_cycle(ctx)
    assert second.get("cycle") == 2, second
    if second["status"] == "closed":
        assert R.run_cycle(ctx)["status"] == "no_new_labels"


def _fill(ctx, champion) -> None:
    tagger = Tagger(Predictor(champion["folder"]), ctx.store, dedup=False, loader=Predictor)
    ingest_and_review(tagger, stream(0, 30))


@pytest.fixture(scope="module")
def never_killed(champion, tmp_path_factory) -> dict:
    """The state a run never killed leaves (the reference of the kill tests)."""
    clean = R.make_context(make_cfg(tmp_path_factory.mktemp("clean"), champion, **FAST), say=print)
    _fill(clean, champion)
    R.run_cycle(clean)
    return state(clean)


@pytest.mark.parametrize("step", ["labels", "dataset", "train", "evaluate"])
def test_killed_after_each_step_ends_in_the_same_state(
    tmp_path, champion, step, monkeypatch, never_killed
):
    expected = never_killed
    ctx = R.make_context(make_cfg(tmp_path / "killed", champion, **FAST), say=lambda s: None)
    _fill(ctx, champion)
    kills = {"left": 1}

    def killed(func):
        def wrapper(*args, **kw):
            out = func(*args, **kw)
            if kills["left"]:
                kills["left"] -= 1
                raise KeyboardInterrupt  # after the step's work, before the store records it
            return out

        return wrapper

    if step == "train":
        monkeypatch.setattr(R, "step_train", killed(R.step_train))
    else:
        monkeypatch.setitem(R.STEP_FUNCS, step, killed(R.STEP_FUNCS[step]))
    with pytest.raises(KeyboardInterrupt):
        R.run_cycle(ctx)
    R.run_cycle(ctx)  # the rerun goes on from where it was
    got = state(ctx)
    assert got == {**expected, "cycles": got["cycles"]}
    assert [c[:3] for c in got["cycles"]] == [c[:3] for c in expected["cycles"]]
    assert len(got["datasets"]) == 1  # never built twice


def test_killed_inside_training_trains_again(tmp_path, champion, monkeypatch):
    ctx = R.make_context(make_cfg(tmp_path, champion, **FAST), say=lambda s: None)
    tagger = Tagger(Predictor(champion["folder"]), ctx.store, dedup=False, loader=Predictor)
    ingest_and_review(tagger, stream(0, 30))

    def dies(champion_dir, out_dir, *a, **kw):
        Path(str(out_dir) + ".tmp").mkdir(parents=True)  # half written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        R.run_cycle(ctx, trainer=dies)
    out = R.run_cycle(ctx)
    assert out.get("step") == "shadow" or out.get("outcome") == "rejected", out
    assert (next(Path(ctx.s.folder).glob("*")) / "challenger" / "inference.json").is_file()


def test_admin_pause_veto_force_and_the_lock(tmp_path, champion, passing_paired):
    ctx = R.make_context(make_cfg(tmp_path, champion, **FAST), say=lambda s: None)
    tagger = Tagger(Predictor(champion["folder"]), ctx.store, dedup=False, loader=Predictor)
    ingest_and_review(tagger, stream(0, 30))
    with pytest.raises(Exception, match="who"):
        R.admin(ctx, "pause", "", "")
    R.admin(ctx, "pause", "ana", "freeze")
    assert R.run_cycle(ctx) == {"status": "paused"}
    R.admin(ctx, "resume", "ana", "over")
    assert R.run_cycle(ctx)["step"] == "shadow"
    holder = acquire_lock(ctx.engine)
    with pytest.raises(CycleBusy):
        R.run_cycle(ctx)
    release_lock(ctx.engine, holder)
    R.admin(ctx, "force", "ana", "urgent fix")
    assert deployed(ctx.engine).name == "challenger"
    out = R.admin(ctx, "veto", "bob", "it tags spam")
    assert out["outcome"] == "rolled_back"
    assert deployed(ctx.engine) == champion["folder"].resolve()
    admin = [(e["name"], e["by"], e["why"]) for e in events(ctx.engine, 50) if e["kind"] == "admin"]
    assert ("force", "ana", "urgent fix") in admin and ("veto", "bob", "it tags spam") in admin


def test_cli_one_line_answers(tmp_path, champion):
    args = [
        f"store.url=sqlite:///{tmp_path / 'store.db'}",
        f"model_dir={champion['folder']}",
        f"cycle.folder={tmp_path / 'cycles'}",
        "cycle.data=projects",
    ]
    proc = run_job("cycle", "status", *args)
    assert proc.returncode == 0 and "no cycle open" in proc.stdout, proc.stderr[-2000:]
    proc = run_job("cycle", "veto", "--by", "ana", "--why", "x", *args)
    assert proc.returncode != 0 and "no cycle is open" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
