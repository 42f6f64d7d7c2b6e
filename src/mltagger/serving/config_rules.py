"""What the serve config (conf/serve.yaml: `mltagger serve`, `ingest`, `dataset build`) may hold.

Checked right after composing, before the model is loaded or the store opened: a model_dir that
does not exist, port -1, a batch limit of 0 or a null calibration file used to fail while the
service started (a TypeError in pathlib for the null path), or not at all until a request came.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from mltagger.core.checks import (
    Rule,
    check_config,
    config_root,
    flag,
    integer,
    number,
    one_of,
    path,
    probability,
    sequence,
    text,
)
from mltagger.core.errors import ConfigError
from mltagger.serving.batching import LIMITS
from mltagger.serving.connections import check_trusted
from mltagger.serving.rollout import Rollout, RolloutError
from mltagger.serving.service import POLICIES
from mltagger.serving.store import QUEUE_ORDERS


def _network(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        check_trusted([value])
    except ValueError:
        return False
    return True


def _rollout(value: Any) -> bool:
    try:
        Rollout.parse(value if isinstance(value, str) else None)
    except RolloutError:
        return False
    return isinstance(value, str)


SERVE_RULES = {
    "task_name": text(),
    "model_dir": path(
        "model folder",
        hint="make one with `make train` and `make export`, or point model_dir= at a model folder",
    ),
    "candidate": path("model folder", nullable=True, optional=True),
    "rollout": Rule(
        "shadow or canary:<percent> (0 < percent <= 100)", _rollout, nullable=True, optional=True
    ),
    "monitor.audit_share": probability(optional=True),
    "host": text(),
    "port": integer(1, 65535),
    "server.trusted_proxies": sequence(
        Rule("an IP address or network (e.g. 10.0.0.0/8)", _network), optional=True
    ),
    "server.header_timeout": number(above=0, high=3600, optional=True),
    "server.body_timeout": number(above=0, high=3600, optional=True),
    "server.keep_alive_timeout": number(above=0, high=3600, optional=True),
    "server.max_connections": integer(1, nullable=True, optional=True),
    "workers": integer(1, optional=True),
    "threads": integer(1, nullable=True, optional=True),
    "onnx_spinning": flag(optional=True),
    "batching.enabled": flag(optional=True),
    "batching.max_batch": integer(*LIMITS["max_batch"], optional=True),
    "batching.max_wait_ms": number(*LIMITS["max_wait_ms"], optional=True),
    "batching.queue_timeout_ms": number(*LIMITS["queue_timeout_ms"], optional=True),
    "store.url": text(),
    # A digits-only key must be quoted (api_key="'123'"), else Hydra reads a number.
    "api_key": text(nullable=True, optional=True),
    "limits.max_batch": integer(1),
    "limits.max_title_chars": integer(1),
    "limits.max_description_chars": integer(1),
    "limits.max_body_bytes": integer(1),
    "limits.public_per_minute": integer(1, optional=True),
    "limits.public_burst": integer(1, optional=True),
    "dedup.enabled": flag(),
    "dedup.screen_file": text(),  # must exist when dedup.enabled, below
    "dedup.near_threshold": number(0, 1, nullable=True),
    "dedup.on_duplicate": one_of(POLICIES),
    "dedup.index_dir": text(nullable=True, optional=True),  # auto, null or a folder
    "dedup.index_shared": flag(optional=True),
    "review.page_size": integer(1),
    "review.max_page_size": integer(1),
    "review.order": one_of(QUEUE_ORDERS, optional=True),
    "review.max_age_hours": number(above=0, nullable=True, optional=True),
    "review.random_share": number(0, 0.9, optional=True),
    "ingest.chunk_size": integer(1),
    "ui.enabled": flag(optional=True),
    "ui.session_minutes": number(1, 60 * 24 * 30, optional=True),
    "ui.secure_cookies": flag(optional=True),
    "ui.login_per_minute": integer(1, optional=True),
    "ui.login_burst": integer(1, optional=True),
    "ui.precision_target": probability(optional=True),
}


# Read only when the duplicate screen is on.
DEDUP_RULES = {
    "dedup.screen_file": path("file", hint="the shipped one is data/dedup/screen.json"),
}


def check_serve_config(cfg: DictConfig) -> None:
    """The serve config as every serving command composes it."""
    root = config_root(cfg)
    check_config(cfg, SERVE_RULES, root=root)
    if cfg.dedup.enabled:
        check_config(cfg, DEDUP_RULES, root=root)
    review = cfg.review
    if review.max_page_size < review.page_size:
        raise ConfigError(
            f"review.max_page_size={review.max_page_size}: expected at least "
            f"review.page_size={review.page_size}"
        )
