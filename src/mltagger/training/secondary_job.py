"""`mltagger secondary`: refit the secondary-tag head of a model folder (choices on the pool's
folds, `mltagger.training.secondary.ship`), then score the fresh set once with it.

    mltagger secondary --model models/latest --write models/latest models/export
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from mltagger.data.text import item_text
from mltagger.evaluation.secondary import secondary_figures, suggestion_figures
from mltagger.models.predict import Predictor
from mltagger.models.secondary import SecondaryHead
from mltagger.training.secondary import ship


def fresh_figures(model_dir: Path, head: SecondaryHead, fresh: Sequence[dict]) -> dict:
    """The model folder's decisions on the fresh set with this head, against its gold `also`:
    the applied tags (secondary_figures) and what a reviewer would be offered (suggestions)."""
    predictor = Predictor(model_dir)
    predictor.secondary = head
    items = [
        {"id": it["id"], "text": item_text(it["title"], it.get("description"))} for it in fresh
    ]
    records = predictor.predict(items)
    scores = head.scores(
        [it["text"] for it in items],
        np.array([[r["scores"][t] for t in head.labels] for r in records]),
    )
    offered = [
        [t for t, _ in head.suggestions(max(r["scores"], key=r["scores"].get), row)]
        for r, row in zip(records, scores, strict=True)
    ]
    return {
        "figures": secondary_figures(records, fresh, predictor.inference.fallback_tag),
        "suggestions": suggestion_figures(offered, fresh),
        "records": [
            {"id": r["id"], "tags": r["tags"], "needs_review": r["needs_review"], "suggested": o}
            for r, o in zip(records, offered, strict=True)
        ],
    }


def _curve_rows(curve: Sequence[dict], step: int = 5) -> list[str]:
    return [
        f"| {row['threshold']} | {row['applied']} | {row['precision']} |"
        for row in curve[::step]
        if row["applied"]
    ]


def report_markdown(cv: dict, fresh: dict | None, head_path: str) -> str:
    """The run's report: each kind's CV figures, the choice, the fresh figures."""
    lines = [
        "# Secondary tags: chosen on the pool's folds, then the fresh set once",
        "",
        f"Pool items {cv['pool_items']} ({cv['pool_also']} with `also`), {cv['folds']} folds; "
        f"apply target precision {cv['apply_target']}, suggest target {cv['suggest_target']}, "
        f"at least {cv['min_applied']} candidates.",
        "",
        "| kind | AP beside applied tags | candidates | apply threshold | AP beside top tag | "
        "suggest threshold |",
        "|---|---|---|---|---|---|",
    ]
    for kind, k in cv["kinds"].items():
        lines.append(
            f"| {kind} | {k['apply_ap']} | {k['apply_candidates']} | {k['apply'] or 'none'} | "
            f"{k['suggest_ap']} | {k['suggest'] or 'none'} |"
        )
    chosen = cv["kinds"][cv["kind"]]
    lines += [
        "",
        f"Shipped kind: `{cv['kind']}`.",
        "",
        "Beside applied primary tags (threshold, candidates at or above, precision):",
        "",
        "| threshold | candidates | precision |",
        "|---|---|---|",
        *_curve_rows(chosen["apply_curve"]),
        "",
        "Beside every item's top tag (what a reviewer is offered):",
        "",
        "| threshold | candidates | precision |",
        "|---|---|---|",
        *_curve_rows(chosen["suggest_curve"]),
        "",
    ]
    if fresh:
        lines += [
            "## Fresh set (scored once, after the choice)",
            "",
            "```",
            json.dumps(
                {"applied": fresh["figures"], "suggestions": fresh["suggestions"]}, indent=1
            ),
            "```",
        ]
    lines += ["", f"Head: `{head_path}`"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger secondary`: choose on CV, fit on the whole pool, write the head, score fresh."""
    p = argparse.ArgumentParser(prog="mltagger secondary", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/latest"))
    p.add_argument("--pool", type=Path, default=Path("data/pool/stream.json"))
    p.add_argument("--oof", type=Path, default=Path("data/cv/minilm_with_pool.json"))
    p.add_argument("--fresh", type=Path, default=Path("data/eval/fresh.json"))
    p.add_argument(
        "--target",
        type=float,
        default=0.85,
        help="precision an applied secondary tag must reach on CV",
    )
    p.add_argument(
        "--suggest-target",
        type=float,
        default=0.5,
        help="precision a tag offered to reviewers must reach on CV",
    )
    p.add_argument("--min-applied", type=int, default=20)
    p.add_argument(
        "--write",
        type=Path,
        nargs="*",
        default=[],
        help="model folders to put secondary.json in (default: --model)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/secondary"))
    args = p.parse_args(argv)
    for path in (args.model, args.pool, args.oof, *args.write):
        if not path.exists():
            print(f"mltagger secondary: {path} does not exist", flush=True)
            return 2
    out = args.out / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    try:
        head, cv = ship(
            args.model,
            args.pool,
            args.oof,
            out,
            target=args.target,
            suggest_target=args.suggest_target,
            min_applied=args.min_applied,
            write=args.write,
        )
    except ValueError as err:
        print(f"mltagger secondary: {err}", flush=True)
        return 2
    fresh = (
        fresh_figures(args.model, head, json.loads(args.fresh.read_text()))
        if (args.fresh.is_file())
        else None
    )
    metrics = {
        "cv": cv,
        "fresh": {k: fresh[k] for k in ("figures", "suggestions")} if fresh else None,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if fresh:
        (out / "fresh_predictions.json").write_text(json.dumps(fresh["records"]) + "\n")
    (out / "report.md").write_text(report_markdown(cv, fresh, str(out / "secondary.json")))
    print((out / "report.md").read_text())
    if head.apply_threshold is None:
        print(
            f"no threshold reached precision {args.target} beside applied tags on CV: "
            "secondary tags are offered to reviewers only, never applied"
        )
    return 0
