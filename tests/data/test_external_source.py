"""The shipped external weak source: it is what `make data-external` builds from the raw lists
in the repo (whose de-duplication against evaluation items is unit-tested in
tests/unit/data/test_external.py), and its rows are valid."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from tests.conftest import REPO, TAGS

CFG = OmegaConf.load(REPO / "conf" / "data" / "with_external.yaml")
SOURCE = next(s for s in CFG.sources if s.name == "external")


def test_external_json_is_reproduced_by_the_build(tmp_path):
    from mltagger.data.external import build, write
    from mltagger.data.validation import sha256_file

    path = REPO / SOURCE.path
    assert sha256_file(path) == SOURCE.sha256
    items, report = build(REPO / "conf" / "external" / "mapping.yaml", REPO)
    sha = write(items, report, tmp_path / "external.json", tmp_path / "report.json")
    assert sha == SOURCE.sha256, "data/external.json is not what `make data-external` builds"


def test_every_row_is_valid_and_carries_its_provenance():
    from mltagger.data.validation import load_items

    report = load_items(REPO / SOURCE.path, TAGS)
    assert report.ok, report.format()
    rows = json.loads((REPO / SOURCE.path).read_text())
    assert all(r["list"] and r["licence"] and r["mapped_by"] for r in rows)
    assert {r["tag"] for r in rows} == set(TAGS)


def test_package_pool_is_reproduced_from_the_shipped_registry_rows(tmp_path):
    from mltagger.data.package_pool import build
    from mltagger.data.validation import sha256_file

    cfg = OmegaConf.load(REPO / "conf" / "data" / "with_packages.yaml")
    src = next(s for s in cfg.sources if s.name == "packages")
    assert sha256_file(REPO / src.path) == src.sha256
    items, _, _ = build(REPO / "data" / "packages" / "pypi_subset.tsv", REPO)
    out = tmp_path / "packages.json"
    out.write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert sha256_file(out) == src.sha256, "data/packages.json is not what the subset rebuilds"
