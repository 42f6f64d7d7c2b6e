"""The cycle's first steps: its labels, the versioned dataset, and the challenger's training."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from mltagger.core.config import load_data_config
from mltagger.core.paths import resolve_path
from mltagger.cycle import gates as G
from mltagger.cycle.context import (
    Context,
    champion_dir,
    close_cycle,
    closed_cycles,
    held_out_keys_of,
    judge_gates,
    read_json,
    released_batches,
    torch_folder,
    write_json,
)
from mltagger.cycle.evaluate import with_text
from mltagger.cycle.labels import CycleLabels, collect, label_gates
from mltagger.cycle.recipe import cross_fitted_scores, operating_points, recalibrate, set_thresholds
from mltagger.data.validation import sha256_file
from mltagger.models.modelio import read_model_metadata
from mltagger.serving.cycles import (
    new_cycle,
    record_event,
    update_cycle,
)
from mltagger.serving.tables import reviews
from mltagger.training.continual import warm_start
from mltagger.training.teacher import load_soft_labels

log = logging.getLogger(__name__)


def _labels_now(ctx: Context) -> tuple[CycleLabels, int]:
    closed = closed_cycles(ctx.engine)
    seen = max(
        [int((c.get("report") or {}).get("labels", {}).get("max_review_id", 0)) for c in closed]
        + [0]
    )
    _, inference = read_model_metadata(champion_dir(ctx))
    labels = collect(
        ctx.engine,
        inference.approved_tags,
        held_out_keys=held_out_keys_of(ctx),
        seen_review_id=seen,
        released=released_batches(ctx.engine),
        settings=ctx.labels_s,
    )
    return labels, seen


def new_labels_count(engine: sa.Engine) -> int:
    """Reviews stored since the newest closed cycle read its labels (for --if-new-labels)."""
    closed = closed_cycles(engine)
    seen = max(
        [int((c.get("report") or {}).get("labels", {}).get("max_review_id", 0)) for c in closed]
        + [0]
    )
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(reviews.c.id > seen)).scalar())


def maybe_start(ctx: Context) -> dict | None:
    """A new cycle when there is something new to learn; None (and why, said) otherwise."""
    if new_labels_count(ctx.engine) == 0:  # said before the training data is even read
        ctx.say("no new labels since the last cycle: nothing to do")
        return None
    labels, seen = _labels_now(ctx)
    if labels.new_gold == 0:
        ctx.say(f"no new labels since the last cycle (reviews up to id {seen}): nothing to do")
        return None
    if len(labels.train) < ctx.labels_s.min_train:
        ctx.say(
            f"{labels.new_gold} new labels; {len(labels.train)} beyond the recent window of "
            f"{ctx.labels_s.recent} (a cycle trains on at least {ctx.labels_s.min_train}): "
            "waiting for more"
        )
        return None
    sha = labels.sha256()
    for c in closed_cycles(ctx.engine):
        if c["labels_sha256"] == sha and c["outcome"] in ("rolled_back", "rejected", "vetoed"):
            ctx.say(
                f"the labels are the ones cycle {c['id']} learnt from ({c['outcome']}): not "
                "retrying without new labels"
            )
            return None
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S-%f")
    folder = Path(ctx.s.folder) / stamp
    folder.mkdir(parents=True, exist_ok=True)
    cyc = new_cycle(ctx.engine, str(folder), str(champion_dir(ctx)))
    record_event(
        ctx.engine,
        "step",
        "start",
        "ok",
        cycle_id=cyc["id"],
        detail={"new_labels": labels.new_gold},
    )
    ctx.say(f"cycle {cyc['id']}: {labels.new_gold} new labels -> {folder}")
    return cyc


# -- the steps ---------------------------------------------------------------------------------


def step_labels(ctx: Context, cyc: dict) -> str | dict:
    folder = Path(cyc["folder"])
    labels, _ = _labels_now(ctx)
    earlier = []
    for c in closed_cycles(ctx.engine):
        earlier = (c.get("report") or {}).get("labels", {}).get("tags_so_far", earlier)
        if earlier:
            break
    lg = label_gates(labels, earlier, ctx.labels_s)
    max_review = labels.max_review_id  # quarantined labels count as read
    summary = {
        **labels.summary(),
        "max_review_id": max_review,
        "tags_so_far": [r["tag"] for r in (*labels.train, *labels.recent)],
        "gates": lg,
        "sha256": labels.sha256(),
    }
    rows = {
        "train": [_slim(r) for r in (*labels.train, *labels.weak)],
        "recent": [_slim(r) for r in labels.recent],
        "summary": summary,
    }
    write_json(folder / "labels.json", rows)
    for name, q in labels.quarantined.items():
        record_event(
            ctx.engine,
            "gate",
            "labels.quarantine",
            "quarantined",
            cycle_id=cyc["id"],
            detail={"batch": name, **q},
        )
    report = {
        "labels": {k: v for k, v in summary.items() if k != "tags_so_far"}
        | {"tags_so_far": summary["tags_so_far"]},
        "gates": lg,
    }
    update_cycle(ctx.engine, cyc["id"], labels_sha256=summary["sha256"], report=report)
    stop = judge_gates(ctx, cyc, report, lg, "label gate(s) tripped before training")
    if stop is not None:
        return stop
    return "dataset"


def _slim(r: dict) -> dict:
    keep = (
        "item_id",
        "text",
        "tag",
        "weight",
        "source",
        "reviewer",
        "scores",
        "reason",
        "author_tag",
        "model_tag",
    )
    return {k: r.get(k) for k in keep} | {"created_at": str(r.get("created_at"))}


def step_dataset(ctx: Context, cyc: dict) -> str:
    """The labels as a versioned training file; an existing file with the same content is
    used again (a rerun never builds the same dataset twice)."""
    folder = Path(cyc["folder"])
    rows = read_json(folder / "labels.json")["train"]
    data = ctx.data()
    body = {
        "base_data": ctx.s.data,
        "base_data_sha256": data.data_sha256,
        "rows": [{k: r[k] for k in ("item_id", "text", "tag", "weight", "source")} for r in rows],
    }
    text = json.dumps(body, indent=1, ensure_ascii=False) + "\n"

    sha = hashlib.sha256(text.encode()).hexdigest()
    out = Path(ctx.s.datasets)
    out.mkdir(parents=True, exist_ok=True)
    existing = [p for p in sorted(out.glob("v*.json")) if sha256_file(p) == sha]
    if existing:
        path = existing[0]
    else:
        n = 1 + max([int(p.stem[1:]) for p in out.glob("v*.json") if p.stem[1:].isdigit()] + [0])
        path = out / f"v{n}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        with (out / "CHANGELOG.md").open("a") as fh:
            fh.write(
                f"- {path.name} (cycle {cyc['id']}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} "
                f"UTC): {len(rows)} stream labels on {ctx.s.data} ({data.data_sha256[:12]}…); "
                f"sha256 {sha}\n"
            )
    combined = hashlib.sha256(f"{data.data_sha256}:{sha}".encode()).hexdigest()
    write_json(
        folder / "dataset.json",
        {"file": str(path), "sha256": sha, "dataset_sha256": combined, "rows": len(rows)},
    )
    update_cycle(ctx.engine, cyc["id"], dataset_sha256=combined)
    return "train"


def step_train(ctx: Context, cyc: dict, trainer: Callable | None = None) -> str | dict:

    folder = Path(cyc["folder"])
    challenger = folder / "challenger"
    if (challenger / "inference.json").is_file() and read_json(folder / "train.json"):
        return "evaluate"  # a rerun after a kill past the rename
    champion = torch_folder(Path(cyc["champion_dir"]))
    labels, _ = read_model_metadata(champion)
    rows = read_json(folder / "labels.json")["train"]
    data = ctx.data()
    base = with_text(data.splits["train"])
    recipe = []
    soft_path = ctx.cfg.cycle.get("soft_labels") or (
        load_data_config(ctx.s.data).get("teacher_soft_labels")
        if not ctx.cfg.cycle.get("data_config")
        else ctx.cfg.cycle.data_config.get("teacher_soft_labels")
    )
    soft, soft_info = (None, {"reason": "the data config names no teacher soft labels"})
    if soft_path:
        soft, soft_info = load_soft_labels(resolve_path(soft_path, ctx.root), data, labels, base)
    recipe.append(
        G.gate(
            "recipe.soft_labels",
            soft is not None,
            f"rehearsal rows distil {soft_path}"
            if soft is not None
            else f"no teacher soft labels: {soft_info.get('reason')}",
        )
    )
    report = {
        **(cyc.get("report") or {}),
        "recipe": {"soft_labels": soft_info},
        "gates": [*(cyc.get("report") or {}).get("gates", []), *recipe],
    }
    update_cycle(ctx.engine, cyc["id"], report=report)
    stop = judge_gates(ctx, cyc, report, recipe, "recipe gate(s) tripped")
    if stop is not None:
        return stop
    version = f"cycle{cyc['id']}-{Path(cyc['folder']).name}"
    dataset = read_json(folder / "dataset.json")
    ctx.say(f"cycle {cyc['id']}: warm start of {champion.name} on {len(rows)} stream labels")
    started = time.perf_counter()
    xfit = cross_fitted_scores(ctx, folder, champion, rows, base, soft, trainer)
    info = (trainer or warm_start)(
        champion,
        challenger,
        rows,
        base,
        soft,
        ctx.train_s,
        version=version,
        thresholds=None,
        extra={
            "data_sha256": dataset["dataset_sha256"],
            "cycle": cyc["id"],
            "dataset_file": dataset["file"],
        },
    )
    val = with_text(data.splits["val"])
    temperature = recalibrate(challenger, val)
    thresholds, op_info = operating_points(challenger, rows, xfit, val)
    g = G.gate(
        "recipe.operating_points",
        thresholds is not None,
        f"per-tag thresholds ({op_info.get('rule')}, target {op_info.get('target')}) on the "
        f"challenger's out-of-sample scores: {op_info.get('stream_rows')} stream labels "
        f"({op_info.get('folds')}-fold cross-fitted) + {op_info.get('val_rows')} val items"
        if thresholds is not None
        else f"one global threshold only: {op_info.get('why')}",
    )
    record_event(ctx.engine, "gate", g["name"], g["status"], cycle_id=cyc["id"], detail=g)
    report = {
        **report,
        "recipe": {**report["recipe"], "operating_points": op_info},
        "gates": [*report["gates"], g],
    }
    update_cycle(ctx.engine, cyc["id"], report=report)
    if thresholds is None:
        shutil.rmtree(challenger, ignore_errors=True)
        return close_cycle(
            ctx, {**cyc, "report": report}, "rejected", g["why"], {"failed_gates": [g["name"]]}
        )
    set_thresholds(challenger, thresholds, op_info)
    info = {
        **info,
        "temperature": temperature,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(folder / "train.json", info)
    return "evaluate"
