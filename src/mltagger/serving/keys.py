"""API keys with roles, kept in the store: `mltagger keys create|list|revoke`.

Why in the store: every worker and replica reads the same keys, a revoke takes effect on the
next request everywhere, and every write can record the key that made it (`written_by`).

Only the SHA-256 of a key is stored. Keys are 32 random bytes (URL-safe), so a plain hash is
enough: there is nothing to guess that a slow, salted hash would protect (that is for passwords
people choose). The key is shown once, when it is made.

Roles, each including the ones before it in `ROLES` for reading the review queue:
- `ingest`: store items (POST /items);
- `review`: read the review queue and settle items (GET /review, POST /review/{id});
- `admin`: everything, and what needs it later (key management stays a command on purpose:
  whoever runs it has the database, so the API never hands out keys).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from mltagger.core.config import compose_config
from mltagger.core.errors import user_errors
from mltagger.serving.store import Store, describe
from mltagger.serving.tables import StoreError, api_keys, now, ui_sessions

INGEST, REVIEW, ADMIN = "ingest", "review", "admin"
ROLES = (INGEST, REVIEW, ADMIN)
# what each role may do: a role's own rights; admin has every one
GRANTS = {INGEST: {INGEST}, REVIEW: {REVIEW}, ADMIN: {INGEST, REVIEW, ADMIN}}
PREFIX = "mlt_"
CONFIG_KEY_NAME = "config"


@dataclass(frozen=True)
class Key:
    """Who a request's key belongs to: its name (recorded on what it writes) and role, and the
    SHA-256 of the secret itself, which a web session is bound to (a new key of the same name,
    or a changed config key, does not inherit the old one's sessions)."""

    name: str
    role: str
    key_hash: str = field(default="", repr=False, compare=False)

    def allows(self, role: str) -> bool:
        return role in GRANTS[self.role]


def secret_bytes(secret: str) -> bytes:
    """A key as bytes. Header values reach the app as Latin-1 text and a form's as any text, so
    keys are compared and hashed as bytes: `secrets.compare_digest` refuses non-ASCII str."""
    return secret.encode("utf-8", "surrogatepass")


def digest(secret: str) -> str:
    return hashlib.sha256(secret_bytes(secret)).hexdigest()


def same_secret(sent: str, expected: str) -> bool:
    """Constant-time comparison of two keys, whatever characters they hold."""
    return secrets.compare_digest(secret_bytes(sent), secret_bytes(expected))


def create_key(engine: sa.Engine, name: str, role: str) -> tuple[dict, str]:
    """A new key: (its record, the secret, shown once). Names are unique: they are what rows
    record."""
    if role not in ROLES:
        raise StoreError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > 64 or name == CONFIG_KEY_NAME:
        raise StoreError(
            f"key name {name!r}: give 1-64 characters, not {CONFIG_KEY_NAME!r} (reserved for "
            "the key set in the serve config)"
        )
    secret = PREFIX + secrets.token_urlsafe(32)
    record = {
        "name": name,
        "role": role,
        "key_hash": digest(secret),
        "prefix": secret[:10],
        "created_at": now(),
    }
    with engine.begin() as conn:
        if conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first():
            raise StoreError(f"a key named {name!r} exists; revoke it or choose another name")
        record["id"] = int(conn.execute(api_keys.insert().values(**record)).inserted_primary_key[0])
    return _public(record), secret


def _public(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "key_hash"}
    for k in ("created_at", "revoked_at"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    return out


def list_keys(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.id)).all()
    return [_public(dict(r._mapping)) for r in rows]


def revoke_key(engine: sa.Engine, name: str) -> dict:
    with engine.begin() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.name == name)).first()
        if row is None:
            raise StoreError(f"no key named {name!r} (see `mltagger keys list`)")
        if row.revoked_at is not None:
            raise StoreError(f"key {name!r} was revoked at {row.revoked_at.isoformat()}")
        stamp = now()
        conn.execute(api_keys.update().where(api_keys.c.id == row.id).values(revoked_at=stamp))
    return _public({**row._mapping, "revoked_at": stamp})


def find_key(engine: sa.Engine, secret: str) -> Key | None:
    """The live key with this secret, or None (unknown or revoked). One indexed lookup per
    request, so a revoke is seen at once by every worker."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(api_keys.c.name, api_keys.c.role, api_keys.c.key_hash).where(
                api_keys.c.key_hash == digest(secret), api_keys.c.revoked_at.is_(None)
            )
        ).first()
    return Key(row.name, row.role, row.key_hash) if row else None


def end_sessions(engine: sa.Engine, key_name: str | None = None) -> int:
    """End every live web session (of one key, when named) for good, in every worker; the
    number ended. `mltagger keys end-sessions`: after a key leaked, or to make everyone log in
    again. (A revoked key's sessions end by themselves: each request checks the key.)"""
    stamp = now()
    query = ui_sessions.delete().where(ui_sessions.c.expires_at > stamp)
    if key_name is not None:
        query = query.where(ui_sessions.c.key_name == key_name)
    with engine.begin() as conn:
        if (
            key_name not in (None, CONFIG_KEY_NAME)
            and not conn.execute(
                sa.select(api_keys.c.id).where(api_keys.c.name == key_name)
            ).first()
        ):
            raise StoreError(f"no key named {key_name!r} (see `mltagger keys list`)")
        count = int(conn.execute(query).rowcount or 0)
        conn.execute(ui_sessions.delete().where(ui_sessions.c.expires_at <= stamp))
    return count


def count_live(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(api_keys.c.revoked_at.is_(None))).scalar()
            or 0
        )


def args_and_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, list[str]]:
    """The options, and the serve config overrides (store.url=...) that may come anywhere after
    the action; anything else unknown is the parser's one-line error (exit 2)."""
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o or o.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like store.url=...)")
    return args, overrides


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger keys create NAME --role ROLE | list | revoke NAME | end-sessions [--key NAME]
    [store.url=...]`:
    the keys of the store that `conf/serve.yaml` (or `store.url=...`) points at."""
    parser = argparse.ArgumentParser(prog="mltagger keys", description=main.__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a key; the secret is printed once")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=ROLES)
    sub.add_parser("list", help="names, roles, prefixes, when made and revoked")
    revoke = sub.add_parser(
        "revoke", help="a revoked key is refused at once everywhere, its web sessions too"
    )
    revoke.add_argument("name")
    end = sub.add_parser(
        "end-sessions",
        help="log reviewers out of the pages now: every session, or one key's (--key NAME)",
    )
    end.add_argument("--key", metavar="NAME", help="only the sessions of this key")
    args, overrides = args_and_overrides(parser, argv)
    with user_errors():
        cfg = compose_config("serve", overrides)
        store = Store(str(cfg.store.url))
        try:
            if args.action == "create":
                record, secret = create_key(store.engine, args.name, args.role)
                print(f"key {record['name']} ({record['role']}) in {describe(store.url)}:")
                print(secret)
                print(
                    "shown once: keep it in a secret store; send it as the X-API-Key header",
                    file=sys.stderr,
                )
            elif args.action == "list":
                for k in list_keys(store.engine):
                    state = f"revoked {k['revoked_at']}" if k["revoked_at"] else "live"
                    print(
                        f"{k['name']:<24} {k['role']:<7} {k['prefix']}…  {k['created_at']}  {state}"
                    )
            elif args.action == "revoke":
                record = revoke_key(store.engine, args.name)
                print(f"revoked {record['name']} ({record['role']})")
            else:
                ended = end_sessions(store.engine, args.key)
                whose = f"of key {args.key} " if args.key else ""
                print(f"ended {ended} web session{'' if ended == 1 else 's'} {whose}in "
                      f"{describe(store.url)}")  # fmt: skip
        finally:
            store.close()
    return 0
