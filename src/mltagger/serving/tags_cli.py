"""`mltagger tags`: an admin reads and changes the store's approved tag list from the command line.

`list | add NAME [--description TEXT] | retire NAME | remove NAME | history [--tag NAME] |
proposals | propose FILE | accept ID | dismiss ID`, then serve config overrides (store.url=...).
Each change is recorded under `--by` (default: the user running it). A change the list cannot
take (a tag that exists, one the serving model answers, a bad name) is one line on stderr, exit
2, and nothing changes. The running service keeps answering throughout.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mltagger.core.config import compose_config
from mltagger.core.errors import UserError, user_errors
from mltagger.core.paths import resolve_path
from mltagger.models.modelio import read_model_metadata
from mltagger.serving.keys import args_and_overrides
from mltagger.serving.rollout import deployed
from mltagger.serving.store import Store, describe
from mltagger.serving.tag_list import Serving, TagList
from mltagger.serving.tag_proposals import (
    accept_proposal,
    add_proposals,
    dismiss_proposal,
    list_proposals,
)


def serving_model(engine, cfg: Any) -> Serving | None:
    """The model that answers now: the store's newest deployment, else the serve config's
    model_dir; None when neither is a model folder here."""
    folder = deployed(engine) or resolve_path(cfg.model_dir, cfg.paths.root_dir)
    try:
        labels, inference = read_model_metadata(folder)
    except (UserError, OSError, ValueError):
        return None
    return Serving(inference.model_version, tuple(labels))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltagger tags", description=__doc__.splitlines()[0])
    parser.add_argument("--by", help="who makes the change (recorded; default: your user name)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every tag, its status and who changed it when")
    add = sub.add_parser("add", help="a new tag, pending until a promoted model answers it")
    add.add_argument("name")
    add.add_argument("--description")
    sub.add_parser(
        "retire", help="an active tag: the next promoted model may drop it"
    ).add_argument("name")
    sub.add_parser("remove", help="a pending or retired tag no model answers").add_argument("name")
    history = sub.add_parser("history", help="the list's changes, newest first")
    history.add_argument("--tag")
    history.add_argument("--limit", type=int, default=50)
    sub.add_parser("proposals", help="open proposals from `mltagger discover`, largest first")
    sub.add_parser("propose", help="store proposals from a JSON file (a list)").add_argument("file")
    sub.add_parser("accept", help="a proposal's tag joins the list, pending").add_argument(
        "id", type=int
    )
    sub.add_parser("dismiss", help="mark a proposal dismissed").add_argument("id", type=int)
    return parser


def _print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(
            f"{r['name']:<32} {r['status']:<9} {r['updated_by']:<12} {r['updated_at']}  "
            f"{r['description'] or ''}".rstrip()
        )


def run(args: argparse.Namespace, cfg: Any, store: Store) -> None:
    """One action against the store's list (errors: TagListError, one line)."""
    tags, actor = TagList(store.engine), args.by or getpass.getuser()
    if args.action == "list":
        _print_rows(tags.rows())
    elif args.action == "add":
        row = tags.add(args.name, actor, args.description)
        print(f"added {row['name']} (pending until a promoted model answers it) by {actor}")
    elif args.action == "retire":
        tags.retire(args.name, actor)
        print(f"{args.name} is retiring: the next promoted model without it retires it")
    elif args.action == "remove":
        tags.remove(args.name, actor, serving_model(store.engine, cfg))
        print(f"removed {args.name} from the list in {describe(store.url)}")
    elif args.action == "history":
        for e in tags.history(args.limit, args.tag):
            print(f"{e['at']}  {e['tag']:<32} {e['action']:<9} {e['actor']:<12} {e['detail']}")
    elif args.action == "proposals":
        for p in list_proposals(store.engine):
            print(f"{p['id']:>4}  {p['name']:<32} size {p['size']:<5} growth {p['growth']:+.2f}  "
                  f"{', '.join(p['keywords'][:6])}")  # fmt: skip
    elif args.action == "propose":
        try:
            found = json.loads(Path(args.file).read_text())
        except ValueError as err:
            raise UserError(f"{args.file}: not JSON ({err})") from None
        ids = add_proposals(store.engine, found if isinstance(found, list) else [found])
        print(f"stored {len(ids)} proposals (the list is unchanged until an admin accepts one)")
    elif args.action == "accept":
        row = accept_proposal(tags, args.id, actor)
        print(f"added {row['name']} (pending) from proposal {args.id} by {actor}")
    else:
        row = dismiss_proposal(store.engine, args.id, actor)
        print(f"dismissed proposal {args.id} ({row['name']})")


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger tags ACTION ... [store.url=...]` on the store `conf/serve.yaml` points at."""
    parser = _parser()
    args, overrides = args_and_overrides(parser, argv)
    with user_errors():
        cfg = compose_config("serve", overrides)
        store = Store(str(cfg.store.url))
        try:
            run(args, cfg, store)
        finally:
            store.close()
    return 0
