"""deploy/alerts.yml parses as Prometheus rule groups, and every metric it names is on /metrics."""

import re

import yaml
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.serving.api import create_app
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store
from tests.conftest import REPO
from tests.fakes import FakePredictor, make_model_folder

RULES = REPO / "deploy" / "alerts.yml"


def test_rules_parse_and_name_only_metrics_the_service_exports(tmp_path):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 5
    for r in rules:
        assert r["alert"] and r["expr"] and r["annotations"]["summary"], r
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
    named = {m for r in rules for m in re.findall(r"\bmltagger_[a-z_]+", r["expr"])}
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    tagger = Tagger(FakePredictor(make_model_folder(tmp_path / "m")), store, dedup=False)
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'm'}", "api_key=k"])
    with TestClient(create_app(tagger, cfg)) as c:
        c.post("/predict", json={"items": [{"title": "Image segmentation"}]})
        exported = set(re.findall(r"^(?:# TYPE )?(mltagger_[a-z_]+)", c.get("/metrics").text, re.M))
    store.close()
    assert named, "the rules name no metric"
    assert named <= exported, f"not on /metrics: {sorted(named - exported)}"
