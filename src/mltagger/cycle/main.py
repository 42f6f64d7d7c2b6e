"""`mltagger cycle`: run the cycle once (`run`, the default), show it (`status`), or act on it
as an admin (`pause`, `resume`, `veto`, `force`, `release`), each recorded with who and why.

Its options are declared in mltagger.cli (`cycle_options`): building `mltagger --help` must not
import this package's training stack (an ONNX-only `mltagger predict` never loads torch)."""

from __future__ import annotations

import argparse
import json

from mltagger.core.config import compose_config
from mltagger.core.errors import UserError
from mltagger.cycle.learn import new_labels_count
from mltagger.cycle.run import admin, make_context, run_cycle
from mltagger.serving.cycles import alert_state, events, latest_cycles, open_cycle

ACTIONS = ("run", "status", "pause", "resume", "veto", "force", "release")


def cmd(args: argparse.Namespace) -> int:
    words = list(args.overrides)
    args.action = words.pop(0) if words and "=" not in words[0] else "run"
    if args.action not in ACTIONS:
        raise UserError(f"cycle {args.action}: unknown action; one of {', '.join(ACTIONS)}")
    cfg = compose_config("serve", words)
    ctx = make_context(cfg)
    try:
        if args.action == "run":
            out = run_cycle(ctx, if_new_labels=args.if_new_labels)
        elif args.action == "status":
            out = {
                "open": open_cycle(ctx.engine),
                "new_labels": new_labels_count(ctx.engine),
                "last_cycle": (latest_cycles(ctx.engine, 1) or [{}])[0].get("id"),
                "alert": alert_state(ctx.engine),
                "cycles": [
                    {k: c[k] for k in ("id", "step", "status", "outcome", "updated_at")}
                    for c in latest_cycles(ctx.engine, 5)
                ],
                "events": [
                    {k: e[k] for k in ("cycle_id", "kind", "name", "outcome", "by", "why")}
                    for e in events(ctx.engine, 15)
                ],
            }
            if not args.json:
                _print_status(out)
                return 0
        else:
            out = admin(ctx, args.action, args.by, args.why, args.batch)
            print(f"{args.action}: recorded ({args.by}: {args.why})")
        if args.json:
            print(json.dumps(out, indent=1, default=str))
        return 0
    finally:
        ctx.store.close()


def _print_status(out: dict) -> None:
    alert = out["alert"]
    if alert["paused"]:
        p = alert["paused"]
        print(f"PAUSED by {p['by']} at {p['at']}: {p['why']}")
    if alert["tripped"]:
        t = alert["tripped"]
        print(f"ALERT: cycle {t['cycle']} {t['outcome']}: {t['why']}")
    o = out["open"]
    print(f"open cycle: {o['id']} at step {o['step']}" if o else "no cycle open")
    print(f"new labels since the last cycle: {out['new_labels']}")
    for c in out["cycles"]:
        print(f"  cycle {c['id']}: {c['status']} {c['outcome'] or c['step']} ({c['updated_at']})")
    print("recent events:")
    for e in out["events"]:
        who = f" by {e['by']}" if e["by"] and e["by"] != "cycle" else ""
        print(
            f"  [{e['cycle_id']}] {e['kind']} {e['name']}: {e['outcome']}{who}"
            + (f" ({e['why']})" if e["why"] else "")
        )
