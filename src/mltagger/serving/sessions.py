"""Reviewers' web sessions and the pages' anti-forgery (CSRF) tokens, kept in the store.

Why in the store and not in a signed cookie: every worker and replica must accept the same
session, a key's revoke must end its sessions on the next request, and logging out must end a
session for good (a signed cookie stays valid until it expires, whatever the server does).

- A session is made by logging in with a key of role review or admin. The browser gets a random
  token in an HTTP-only, Secure, SameSite=Lax cookie (Lax, so a link from a mail or a chat opens
  the queue logged in; Lax still keeps the cookie off another site's form posts, and every write
  needs the session's form token besides). The store keeps the token's SHA-256, the key's name,
  role and hash, the expiry, and the session's CSRF token, which every form that writes must send
  back.
- A session lives no longer than the very key that made it: revoked, or replaced by a new key of
  the same name, or (for the serve config's key) changed or unset, and the session is over.
  `mltagger keys end-sessions` ends sessions at once.
- Forms shown before a login (the login form, the public report form) cannot use a session's
  token. They use a signed double submit: a random value in an HTTP-only cookie, and in the form
  its HMAC under a secret every worker shares (`settings`, made once per store). A page on another
  site can neither read the cookie nor compute the HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from mltagger.serving.keys import CONFIG_KEY_NAME, Key
from mltagger.serving.tables import api_keys, now, settings, ui_sessions

SECRET_NAME = "csrf_secret"


@dataclass(frozen=True)
class Session:
    """A logged-in reviewer: the key they logged in with, and the session's form token."""

    key: Key
    csrf: str
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=timezone.utc)


def create_session(engine: sa.Engine, key: Key, minutes: float) -> tuple[str, Session]:
    """A new session for `key`: (the cookie's token, shown once; the session)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    stamp = now()
    expires = stamp + timedelta(minutes=minutes)
    with engine.begin() as conn:
        # expired sessions are of no use to anyone: dropped whenever someone logs in
        conn.execute(ui_sessions.delete().where(ui_sessions.c.expires_at < stamp))
        conn.execute(
            ui_sessions.insert().values(
                token_hash=_digest(token),
                key_name=key.name,
                role=key.role,
                key_hash=key.key_hash,
                csrf=csrf,
                created_at=stamp,
                expires_at=expires,
            )
        )
    return token, Session(key, csrf, expires)


def find_session(
    engine: sa.Engine, token: str | None, config_key_hash: str | None
) -> Session | None:
    """The live session of a cookie's token; None when there is none, it expired, or the key that
    made it was revoked since (or, for the serve config's key, is no longer the one set: its
    hash is `config_key_hash`, None when none is set)."""
    if not token:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(ui_sessions).where(ui_sessions.c.token_hash == _digest(token))
        ).first()
        if row is None or _aware(row.expires_at) <= now():
            return None
        if not row.key_hash:  # made before sessions were bound to their key
            live = False
        elif row.key_name == CONFIG_KEY_NAME:
            live = config_key_hash is not None and hmac.compare_digest(
                row.key_hash, config_key_hash
            )
        else:
            live = (
                conn.execute(
                    sa.select(api_keys.c.id).where(
                        api_keys.c.name == row.key_name,
                        api_keys.c.key_hash == row.key_hash,
                        api_keys.c.revoked_at.is_(None),
                    )
                ).first()
                is not None
            )
    if not live:
        return None
    key = Key(row.key_name, row.role, row.key_hash)
    return Session(key, row.csrf, _aware(row.expires_at))


def end_session(engine: sa.Engine, token: str | None) -> None:
    """Log out: the token is worth nothing from now on, in every worker."""
    if token:
        with engine.begin() as conn:
            conn.execute(ui_sessions.delete().where(ui_sessions.c.token_hash == _digest(token)))


def expire_sessions(engine: sa.Engine, key_name: str | None = None) -> int:
    """Mark every session (of one key, when named) expired; the number. For tests: the session
    row stays, as one that ran out of time does."""
    query = ui_sessions.update().values(expires_at=now() - timedelta(seconds=1))
    if key_name is not None:
        query = query.where(ui_sessions.c.key_name == key_name)
    with engine.begin() as conn:
        return int(conn.execute(query).rowcount or 0)


def shared_secret(engine: sa.Engine) -> bytes:
    """The secret every worker signs pre-login form tokens with: made once per store, the first
    writer wins (a racing second insert fails on the primary key and reads the first)."""
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(settings.c.value).where(settings.c.name == SECRET_NAME)
        ).scalar()
    if value is None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    settings.insert().values(name=SECRET_NAME, value=secrets.token_hex(32))
                )
        except sa.exc.IntegrityError:
            pass
        with engine.connect() as conn:
            value = conn.execute(
                sa.select(settings.c.value).where(settings.c.name == SECRET_NAME)
            ).scalar()
    return bytes.fromhex(value)


def form_token(secret: bytes, cookie_value: str) -> str:
    """The pre-login form's token for the value in the browser's CSRF cookie."""
    return hmac.new(secret, b"csrf:" + cookie_value.encode(), hashlib.sha256).hexdigest()


def form_token_ok(secret: bytes, cookie_value: str | None, sent: str | None) -> bool:
    if not cookie_value or not sent:
        return False
    return hmac.compare_digest(form_token(secret, cookie_value), sent)


def session_token_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, str(sent))
