"""The external weak source: list parsing, the section -> tag mapping, de-duplication against
evaluation items, the build's bad-input errors, and train-only weighted sources in the split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from mltagger.core.errors import DataError
from mltagger.data.external import build, main, map_entries, parse_markdown
from mltagger.data.prepare import cap_per_tag
from mltagger.data.split import split_sources_in_order
from tests.conftest import TAGS

LINKS = """# Awesome things
Intro text.
* [Not an entry](#contents)
## Serving
* [Servo](https://x/servo) ![](https://img.shields.io/x.svg) - Serve models behind an HTTP API.
* [Bare](https://x/bare)
## Vision
### Detection
* [DetNet](https://x/det) - Detect **objects** in [images](https://x/img).
### Courses
* [CV 101](https://x/cv101) - A course.
"""


def test_link_style_keeps_names_descriptions_and_heading_paths():
    entries = parse_markdown(LINKS, list_name="l", file="README.md", style="link")
    got = [(e.section, e.title, e.description) for e in entries]
    assert got == [
        (("Serving",), "Servo", "Serve models behind an HTTP API."),
        (("Serving",), "Bare", ""),
        (("Vision", "Detection"), "DetNet", "Detect objects in images."),
        (("Vision", "Courses"), "CV 101", "A course."),
    ]
    assert entries[0].url == "https://x/servo"


def test_bold_paper_and_bestof_styles():
    bold = "# T\n## Deep\n- **Graph Nets for Molecules (AAAI 2020)**\n  - A. Author, B. Author\n"
    e = parse_markdown(bold, list_name="g", file="c.md", style="bold")
    assert [(x.section, x.title) for x in e] == [(("Deep",), "Graph Nets for Molecules")]

    paper = "# T\n## Forecasting\n* TimeNet: Forecast Anything [\\[paper\\]](https://p/1)\n"
    e = parse_markdown(paper, list_name="t", file="r.md", style="paper")
    assert [(x.title, x.url) for x in e] == [("TimeNet: Forecast Anything", "https://p/1")]

    best = (
        "## Text Data & NLP\n"
        '<details><summary><b><a href="https://g/tok">tokenizers</a></b> (🥇40 · ⭐ 9K) - Fast '
        "tokenizers for research.. <code>Apache-2</code></summary>\n"
        '- <b><a href="https://g/small">smalltok</a></b> (🥉10 · ⭐ 50) - A small one. '
        "<code>MIT</code>\n"
    )
    e = parse_markdown(best, list_name="b", file="r.md", style="bestof")
    assert [(x.section, x.title, x.description) for x in e] == [
        (("Text Data & NLP",), "tokenizers", "Fast tokenizers for research"),
        (("Text Data & NLP",), "smalltok", "A small one"),
    ]
    with pytest.raises(DataError, match="unknown style"):
        parse_markdown("", list_name="x", file="r.md", style="html")


def test_mapping_longest_prefix_wins_and_unmapped_sections_are_listed():
    entries = parse_markdown(LINKS, list_name="l", file="README.md", style="link")
    sections = {"Serving": "mlops", "Vision": "computer-vision", "Vision / Courses": "drop"}
    mapped, dropped = map_entries(entries, sections, TAGS)
    assert [(e.title, tag, key) for e, tag, key in mapped] == [
        ("Servo", "mlops", "Serving"),
        ("Bare", "mlops", "Serving"),
        ("DetNet", "computer-vision", "Vision"),
    ]
    assert dropped == {"Vision / Courses (dropped on purpose)": 1}

    mapped, dropped = map_entries(entries, {"Serving": "mlops"}, TAGS)
    assert len(mapped) == 2
    assert dropped == {"Vision / Detection": 1, "Vision / Courses": 1}  # never guessed

    mapped, _ = map_entries(entries, {"*": "computer-vision"}, TAGS)
    assert len(mapped) == 4
    with pytest.raises(DataError, match="not approved"):
        map_entries(entries, {"Serving": "ops"}, TAGS)


def _tree(tmp_path: Path, readme: str = LINKS) -> Path:
    raw = tmp_path / "raw" / "owner" / "list"
    raw.mkdir(parents=True)
    (raw / "README.md").write_text(readme)
    (raw / "LICENSE").write_text("CC0")
    ref = [
        {
            "id": 1,
            "created_on": "2020-01-01 00:00:00",
            "title": "DetNet",
            "description": "Detect objects in images.",
            "tag": "computer-vision",
        }
    ]
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    mapping = {
        "raw_dir": str(tmp_path / "raw"),
        "tags": TAGS,
        "excluded_lists": [],
        "exclude_copies_of": [str(tmp_path / "ref.json")],
        "near_duplicates": {"threshold": 0.7, "same_title_min_chars": 12},
        "lists": [
            {
                "name": "l",
                "folder": "owner/list",
                "licence": "CC0 1.0",
                "licence_file": "LICENSE",
                "date": "2024-01-01",
                "style": "link",
                "files": [
                    {
                        "path": "README.md",
                        "sha256": hashlib.sha256(readme.encode()).hexdigest(),
                    }
                ],
                "sections": {"Serving": "mlops", "Vision": "computer-vision"},
            }
        ],
    }
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_build_removes_copies_of_reference_items_and_records_provenance(tmp_path):
    items, report = build(_tree(tmp_path), tmp_path)
    titles = [it["title"] for it in items]
    assert "DetNet" not in titles  # an exact copy of a reference (evaluation) item
    assert titles == ["Servo", "Bare", "CV 101"]
    assert report["removed_copies_of_reference"] == 1
    first = items[0]
    assert first["id"] == 200001 and first["tag"] == "mlops"
    assert (first["list"], first["section"], first["licence"]) == ("l", "Serving", "CC0 1.0")
    assert first["created_on"] == "2024-01-01 00:00:00"


def test_cross_list_copies_with_conflicting_tags_are_dropped(tmp_path):
    readme = LINKS + "## Serving again\n* [DetNet](https://x/det2) - Detect objects in images.\n"
    path = _tree(tmp_path, readme)
    cfg = yaml.safe_load(path.read_text())
    cfg["exclude_copies_of"] = []
    cfg["lists"][0]["sections"]["Serving again"] = "mlops"
    path.write_text(yaml.safe_dump(cfg))
    items, report = build(path, tmp_path)
    assert "DetNet" not in [it["title"] for it in items]
    assert report["removed_within_external"]["groups_with_conflicting_tags"] == 1


def test_changed_or_missing_raw_file_names_it_and_exits_1(tmp_path, capsys, monkeypatch):
    path = _tree(tmp_path)
    readme = tmp_path / "raw" / "owner" / "list" / "README.md"
    readme.write_text(LINKS + "* [New](https://x/new) - added upstream\n")
    with pytest.raises(DataError, match=r"README.md changed \(sha256"):
        build(path, tmp_path)
    monkeypatch.setenv("MLTAGGER_ROOT", str(tmp_path))
    readme.unlink()
    assert main(["--mapping", str(path), "--out", str(tmp_path / "e.json")]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "README.md is missing" in out[0]
    assert not (tmp_path / "e.json").exists()


def _it(i, tag, source, text="x"):
    return {"id": i, "tag": tag, "source": source, "title": f"{text} {i}", "description": ""}


def test_train_only_source_goes_to_train_and_loses_near_copies_of_test_items():
    items = [_it(i, t, "own") for i, t in enumerate(TAGS * 6)]
    items += [_it(100 + i, t, "weak") for i, t in enumerate(TAGS)]
    first = split_sources_in_order(items, ["own", "weak"], val_size=0.2, test_size=0.2, seed=0)
    test_id = first["test"][0]["id"]
    dropped: list[dict] = []
    splits = split_sources_in_order(
        items,
        ["own", "weak"],
        val_size=0.2,
        test_size=0.2,
        seed=0,
        groups=[[test_id, 100]],
        train_only=["weak"],
        dropped=dropped,
    )
    weak_in = {s: [it["id"] for it in v if it["source"] == "weak"] for s, v in splits.items()}
    assert weak_in["val"] == [] and weak_in["test"] == []
    assert sorted(weak_in["train"]) == list(range(101, 100 + len(TAGS)))
    assert dropped == [{"id": 100, "source": "weak", "near_copy_in": "test"}]
    # The platform's own items are split exactly as without the weak source.
    for s in splits:
        assert [it["id"] for it in splits[s] if it["source"] == "own"] == [
            it["id"] for it in first[s] if it["source"] == "own"
        ]


def test_cap_per_tag_is_seeded_and_keeps_small_tags_whole():
    items = [_it(i, "a", "w") for i in range(10)] + [_it(10 + i, "b", "w") for i in range(3)]
    capped, changed = cap_per_tag(items, 4, seed=1)
    assert changed
    assert sum(it["tag"] == "a" for it in capped) == 4
    assert sum(it["tag"] == "b" for it in capped) == 3
    assert capped == cap_per_tag(items, 4, seed=1)[0]
    assert cap_per_tag(items, None) == (items, False)
    with pytest.raises(DataError, match="positive"):
        cap_per_tag(items, 0)


def test_a_weak_sources_weight_reaches_its_training_rows(data_cfg, tmp_path):
    from mltagger.core.errors import ConfigError
    from mltagger.data.prepare import prepare_data
    from mltagger.data.validation import sha256_file

    weak = tmp_path / "weak.json"
    weak.write_text(
        json.dumps(
            [
                {
                    "id": 9001 + i,
                    "created_on": "2024-01-01 00:00:00",
                    "title": f"Weak item number {i} about {tag}",
                    "description": f"A list entry filed under {tag}.",
                    "tag": tag,
                }
                for i, tag in enumerate(TAGS[:6])
            ]
        )
    )
    data_cfg.sources.append(
        {
            "name": "weak",
            "path": str(weak),
            "sha256": sha256_file(weak),
            "split": "train",
            "weight": 0.25,
        }
    )
    data = prepare_data(data_cfg)
    train = data.splits["train"]
    assert {it.get("weight") for it in train if it["source"] == "weak"} == {0.25}
    assert all("weight" not in it for it in train if it["source"] != "weak")
    assert data.manifest()["sources"][-1]["weight"] == 0.25
    data_cfg.sources[-1]["weight"] = 1.5
    with pytest.raises(
        ConfigError, match=r"sources\[1\]\.weight=1\.5: expected a number in \(0, 1\]"
    ):
        prepare_data(data_cfg)
