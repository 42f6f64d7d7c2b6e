"""What every step of the cycle works with: its settings, the run's context, the cycle's files,
the close of a cycle (report, alert, webhook, W&B run)."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mltagger.core.config import load_data_config
from mltagger.core.errors import UserError
from mltagger.core.paths import resolve_path
from mltagger.cycle import gates as G
from mltagger.cycle.labels import LabelSettings
from mltagger.data.duplicates import dedup_key
from mltagger.data.prepare import prepare_data
from mltagger.models.modelio import read_model_metadata
from mltagger.serving.cycles import (
    CLOSED,
    current_rollout,
    latest_cycles,
    record_event,
    set_rollout,
    update_cycle,
)
from mltagger.serving.rollout import deployed
from mltagger.serving.store import Store
from mltagger.serving.tables import items, settings
from mltagger.training.continual import WarmStart

log = logging.getLogger(__name__)

RELEASED_KEY = "cycle_released"


class CycleError(UserError):
    """A cycle that cannot go on, said in one line (recorded as outcome `failed`)."""


@dataclass(frozen=True)
class CycleSettings:
    folder: str = "runs/cycle"
    datasets: str = "var/cycle/datasets"
    data: str = "with_pool"
    shadow_items: int = 100
    max_shadow_disagreement: float = 0.25
    canary_percent: float = 20.0
    canary_author_items: int = 200
    canary_audit_items: int = 30
    canary_margin: float = 0.03
    watch_items: int = 100
    watch_windows: int = 2
    watch_max_disagreement: float = 0.25
    watch_floor: float = 0.85
    watch_min_audit: int = 10
    export_parity: bool = True
    behaviour: bool = True
    webhook: str | None = None
    wandb_mode: str | None = None

    @classmethod
    def from_cfg(cls, c: Any) -> CycleSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(c or {}).items() if k in names})


def _sub(cls, c: Any):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dict(c or {}).items() if k in names})


@dataclass
class Context:
    """What one run of the cycle works with."""

    cfg: Any
    store: Store
    s: CycleSettings
    labels_s: LabelSettings
    gates_s: G.GateSettings
    train_s: WarmStart
    root: Path
    say: Callable[[str], None]
    _data: Any = None
    clock: Callable[[], float] = time.perf_counter

    @property
    def engine(self) -> sa.Engine:
        return self.store.engine

    def data(self):
        """The default training data (prepared once a run)."""
        if self._data is None:
            data_cfg = self.cfg.cycle.get("data_config") or load_data_config(self.s.data)
            self._data = prepare_data(data_cfg, self.root)
        return self._data


def make_context(cfg: Any, say: Callable[[str], None] = print) -> Context:
    c = cfg.get("cycle") or {}
    root = Path(cfg.paths.root_dir)
    s = CycleSettings.from_cfg(c)
    s = CycleSettings(
        **{
            **s.__dict__,
            "folder": str(resolve_path(s.folder, root)),
            "datasets": str(resolve_path(s.datasets, root)),
        }
    )
    return Context(
        cfg=cfg,
        store=Store(str(cfg.store.url)),
        s=s,
        labels_s=_sub(LabelSettings, c.get("labels")),
        gates_s=_sub(G.GateSettings, c.get("gates")),
        train_s=_sub(WarmStart, c.get("train")),
        root=root,
        say=say,
    )


# -- small helpers -----------------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def champion_dir(ctx: Context) -> Path:
    """What serves now: the store's newest deployment, else the serve config's model_dir."""
    recorded = deployed(ctx.engine)
    if recorded is not None:
        return recorded.resolve()
    folder = resolve_path(ctx.cfg.model_dir, ctx.root)
    if not Path(folder).is_dir():
        raise CycleError(f"model_dir={ctx.cfg.model_dir}: no model folder to start from")
    return Path(folder).resolve()


def torch_folder(folder: Path) -> Path:
    """The trainable weights behind a model folder (an ONNX export names its source)."""
    if (folder / "model.safetensors").is_file():
        return folder
    _, inference = read_model_metadata(folder)
    for key in ("exported_from", "warm_start_from"):
        src = inference.extra.get(key)
        if src and (Path(src) / "model.safetensors").is_file():
            return Path(src)
    raise CycleError(
        f"{folder} has no torch weights and names none (extra.exported_from): the cycle "
        "warm-starts from the champion's weights; serve a training output or an export of one"
    )


def released_batches(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(settings.c.value).where(settings.c.name == RELEASED_KEY)
        ).scalar()
    return json.loads(value) if value else []


def closed_cycles(engine: sa.Engine) -> list[dict]:
    return [c for c in latest_cycles(engine, 50) if c["status"] == CLOSED]


def held_out_keys_of(ctx: Context) -> set[str]:
    data = ctx.data()
    return {
        dedup_key(f"{r['title']} {r.get('description') or ''}")
        for r in (*data.splits["test"], *data.fresh)
    }


def notify(ctx: Context, cycle_id: int, what: dict) -> None:
    """The optional webhook (cycle.webhook): a JSON POST; a failure is recorded, never fatal."""
    url = ctx.s.webhook
    if not url:
        return
    body = json.dumps({"source": "mltagger cycle", "cycle": cycle_id, **what}, default=str).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status = resp.status
        record_event(
            ctx.engine, "alert", "webhook", "sent", cycle_id=cycle_id, detail={"status": status}
        )
    except OSError as err:
        log.warning("cycle webhook %s failed: %s", url, err)
        record_event(
            ctx.engine, "alert", "webhook", "failed", cycle_id=cycle_id, detail={"error": str(err)}
        )


def judge_gates(ctx: Context, cyc: dict, report: dict, gates: list[dict], what: str) -> dict | None:
    """Record each gate as an event; close the cycle as rejected when one failed (its result),
    else None: the cycle goes on."""
    for g in gates:
        record_event(ctx.engine, "gate", g["name"], g["status"], cycle_id=cyc["id"], detail=g)
    bad = G.failed(gates)
    if not bad:
        return None
    return close_cycle(
        ctx, {**cyc, "report": report}, "rejected", f"{what}: {bad}", {"failed_gates": bad}
    )


def close_cycle(
    ctx: Context, cyc: dict, outcome: str, why: str, report: dict | None = None
) -> dict:
    """End a cycle: its outcome, the report, the rollout off, an alert when it needs a person."""
    report = {**(cyc.get("report") or {}), **(report or {}), "outcome": outcome, "why": why}
    if current_rollout(ctx.engine) and current_rollout(ctx.engine)["mode"] != "off":
        set_rollout(ctx.engine, None, "off", cycle_id=cyc["id"])
    update_cycle(ctx.engine, cyc["id"], status=CLOSED, outcome=outcome, report=report)
    record_event(ctx.engine, "decision", "close", outcome, cycle_id=cyc["id"], why=why)
    folder = Path(cyc["folder"])
    if folder.is_dir():
        write_json(folder / "report.json", report)
        (folder / "report.md").write_text(render(cyc["id"], report))
    ctx.say(f"cycle {cyc['id']}: {outcome}: {why}")
    if outcome in ("rejected", "rolled_back", "failed"):
        notify(
            ctx,
            cyc["id"],
            {"outcome": outcome, "why": why, "failed_gates": report.get("failed_gates", [])},
        )
    _wandb(ctx, cyc["id"], report)
    return {"cycle": cyc["id"], "status": "closed", "outcome": outcome, "why": why}


def _wandb(ctx: Context, cycle_id: int, report: dict) -> None:
    """Each cycle's report as a W&B run (job type cycle), offline unless a key is set."""

    mode = ctx.s.wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
        return
    try:
        import wandb

        run = wandb.init(
            project="mltagger",
            job_type="cycle",
            name=f"cycle-{cycle_id}",
            mode=mode,
            dir=str(ctx.s.folder),
            reinit="finish_previous",
            config={"cycle": cycle_id},
        )
        flat = {f"gate/{g['name']}": g["status"] for g in report.get("gates", [])}
        run.summary.update({"outcome": report.get("outcome"), "why": report.get("why"), **flat})
        run.finish()
    except Exception as err:
        log.warning("W&B run of cycle %s not written: %s", cycle_id, err)
        record_event(
            ctx.engine, "step", "wandb", "failed", cycle_id=cycle_id, detail={"error": str(err)}
        )


# -- starting a cycle --------------------------------------------------------------------------


def render(cycle_id: int, report: dict) -> str:
    """The cycle's report as Markdown: outcome, every gate with its figure, the figures."""
    lines = [f"# Cycle {cycle_id}: {report.get('outcome')}", "", f"{report.get('why')}", ""]
    lab = report.get("labels") or {}
    if lab:
        lines += [
            "## Labels",
            "",
            f"- gold for training: {lab.get('train_gold')}, author tags: "
            f"{lab.get('train_weak')} (weight {lab.get('author_weight')}), recent window: "
            f"{lab.get('recent_window')}, new: {lab.get('new_gold')}",
            f"- quarantined: {sorted(lab.get('quarantined') or {}) or 'none'}",
            f"- left out: {lab.get('left_out') or 'none'}",
            "",
        ]
    lines += ["## Gates", "", "| gate | status | figure | why |", "|---|---|---:|---|"]
    for g in report.get("gates", []):
        lines.append(f"| {g['name']} | {g['status']} | {g.get('figure', '')} | {g['why']} |")
    figs = (report.get("evaluation") or {}).get("figures") or {}
    if figs:
        lines += [
            "",
            "## Champion and challenger on the same items",
            "",
            "| set | model | n | coverage | precision | out-of-scope harm | top-1 |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, by in figs.items():
            for who, f in by.items():
                lines.append(
                    f"| {name}{' (never gated)' if name == 'fresh' else ''} | {who} | {f['n']} | "
                    f"{_p(f['coverage'])} | {_p(f['precision'])} | {_p(f['oos_harm'])} | "
                    f"{_p(f['top1'])} |"
                )
    return "\n".join(lines) + "\n"


def _p(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def max_item_id(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(items.c.id))).scalar() or 0)
