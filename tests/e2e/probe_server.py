"""A service for the security probe (tests/e2e/test_probe.py, `make security`), in a process of
its own so the probe can read its memory: the serve config's app and server settings over a
predictor with known answers (tests/fakes.py) and the given store.

    python -m tests.e2e.probe_server FOLDER PORT STORE_URL KEY [serve overrides...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from mltagger.core.config import compose_config
from mltagger.serving.api import create_app
from mltagger.serving.connections import ServeConfig, server_options
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store
from tests.fakes import FakePredictor, make_model_folder, write_screen


def main(argv: list[str]) -> None:
    folder, port, store_url, key, *overrides = argv
    tmp = Path(folder)
    tagger = Tagger(
        FakePredictor(make_model_folder(tmp / "model")),
        Store(store_url),
        screen_file=write_screen(tmp / "screen.json"),
    )
    cfg = compose_config("serve", [f"model_dir={tmp / 'model'}", f"api_key={key}", *overrides])
    config = ServeConfig(
        create_app(tagger, cfg), host="127.0.0.1", port=int(port), log_level="warning",
        **server_options(cfg),
    )  # fmt: skip
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main(sys.argv[1:])
