"""The service as processes: build the Tagger from the serve config, and run it on uvicorn with
one worker or several (`mltagger serve`, `make serve WORKERS=N`).

Apart from `api.py` (the endpoints) because this is about processes, not requests: with several
workers the parent checks the config, the model folder and the store once (migrations run once,
not raced by N workers), sets the folder where prometheus_client's multiprocess mode keeps each
worker's values, and hands uvicorn a factory; each worker then builds its own Tagger (model,
store connection, duplicate index synced from the store).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from mltagger.core.config import compose_config
from mltagger.core.errors import ConfigError, user_errors
from mltagger.core.paths import resolve_path
from mltagger.models.modelio import read_model_metadata
from mltagger.models.predict import Predictor
from mltagger.serving.api import create_app
from mltagger.serving.batching import BatchSettings, MicroBatcher
from mltagger.serving.config_rules import check_serve_config
from mltagger.serving.connections import ServeConfig, server_options
from mltagger.serving.rollout import Rollout, check_candidate, deployed
from mltagger.serving.screen_files import index_options
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store, describe

log = logging.getLogger("mltagger.serve")


def check_model_dir(cfg: Any) -> Path:
    folder = resolve_path(cfg.model_dir, cfg.paths.root_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model_dir={cfg.model_dir}: no such model folder ({folder}); make one with "
            "`make train` and `make export`, or point model_dir= at a run's model folder"
        )
    return folder


def build_tagger(cfg: Any) -> Tagger:
    """Model, store and index from the serve config; clear errors for a missing model."""

    check_serve_config(cfg)  # every value, before the model is loaded or the store opened
    folder = check_model_dir(cfg)
    labels, _ = read_model_metadata(folder)

    def load(path: Path):
        return Predictor(
            path, threads=cfg.get("threads"), spinning=bool(cfg.get("onnx_spinning", False))
        )

    candidate, rollout = None, None
    if cfg.get("candidate"):
        rollout = Rollout.parse(cfg.get("rollout"))
        candidate = load(check_candidate(resolve_path(cfg.candidate, cfg.paths.root_dir), labels))
    monitor = cfg.get("monitor") or {}
    store = Store(str(cfg.store.url))
    serving = folder
    recorded = deployed(store.engine)
    if recorded is not None and recorded.resolve() != folder.resolve():
        # the store decides once a promote is recorded: every worker and replica agrees
        log.info("serving %s, the deployment recorded in the store (not model_dir)", recorded)
        serving = recorded
    tagger = Tagger(
        load(serving),
        store,
        dedup=bool(cfg.dedup.enabled),
        near_threshold=cfg.dedup.get("near_threshold"),
        screen_file=resolve_path(cfg.dedup.screen_file, cfg.paths.root_dir),
        candidate=candidate,
        rollout=rollout,
        audit_share=float(monitor.get("audit_share", 0.0)),
        model_link=folder if folder.is_symlink() else None,
        loader=load,
        **index_options(cfg),  # the screen index's folder: loaded at start, saved at exit
    )
    tagger.batcher = MicroBatcher(BatchSettings.from_config(cfg.get("batching")))
    return tagger


OVERRIDES_ENV = "MLTAGGER_SERVE_OVERRIDES"


def app_from_env() -> FastAPI:
    """The app of one worker (uvicorn's factory): the serve config from the overrides the parent
    process put in `MLTAGGER_SERVE_OVERRIDES`; each worker loads the model and the duplicate
    index itself."""
    overrides = json.loads(os.environ.get(OVERRIDES_ENV, "[]"))
    cfg = compose_config("serve", overrides)
    return create_app(build_tagger(cfg), cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger serve [hydra overrides]`: the service on uvicorn, `workers` processes."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = list(sys.argv[1:] if argv is None else argv)
    with user_errors():
        cfg = compose_config("serve", overrides)
        check_serve_config(cfg)
        workers = int(cfg.get("workers") or 1)
        if workers < 1:
            raise ConfigError(f"workers={workers}: give 1 or more worker processes")
        if workers == 1:
            tagger = build_tagger(cfg)
            app = create_app(tagger, cfg)
        else:
            # Checked once here, before any worker starts: the model folder exists and the store
            # opens at the latest schema (migrations run once, not raced by N workers).
            check_model_dir(cfg)
            Store(str(cfg.store.url)).close()
    if workers == 1:
        log.info(
            "model %s (%s), store %s, %d items; docs at http://%s:%s/docs, review page at "
            "http://%s:%s/ui/review",
            tagger.predictor.inference.model_version,
            tagger.predictor.backend,
            describe(tagger.store.url),
            tagger.store.count_items(),
            cfg.host,
            cfg.port,
            cfg.host,
            cfg.port,
        )
        config = ServeConfig(
            app, host=str(cfg.host), port=int(cfg.port), log_level="info", access_log=False,
            **server_options(cfg),
        )  # fmt: skip
        uvicorn.Server(config).run()
        return 0
    os.environ[OVERRIDES_ENV] = json.dumps(overrides)
    # /metrics adds up the workers' values from files in this folder (prometheus_client's
    # multiprocess mode); it must be set before any worker imports prometheus_client.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="mltagger-prom-"))
    log.info(
        "%d workers on http://%s:%s, store %s", workers, cfg.host, cfg.port, describe(cfg.store.url)
    )
    config = ServeConfig(
        "mltagger.serving.server:app_from_env",
        factory=True,
        workers=workers,
        host=str(cfg.host),
        port=int(cfg.port),
        log_level="info",
        access_log=False,
        **server_options(cfg),
    )
    sock = config.bind_socket()
    # Accepted connections inherit TCP_NODELAY from the listening socket (Linux). uvicorn's
    # workers accept on a socket rebuilt from the parent's, which asyncio does not recognise as
    # TCP, so it never sets TCP_NODELAY on the connections: every answer then waited ~40 ms for
    # the client's delayed ACK (measured: 48 ms vs 0.9 ms for GET /health on keep-alive).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()
    return 0
