"""`make mutation` names the functions it mutates (scripts/mutation.py): a renamed or moved
function must fail here, not drop out of the mutation score silently."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from tests.conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("mutation", REPO / "scripts" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_function_in_scope_exists():
    script = _script()
    for module_name, functions in script.SCOPE.items():
        module = importlib.import_module(f"mltagger.{module_name}")
        for name in functions:
            obj = module
            for part in name.split("."):
                obj = getattr(obj, part)
            assert callable(obj), f"{module_name}.{name}"


def test_mangled_names_follow_mutmut(tmp_path):
    script = _script()
    assert (
        script.mangled("models.rule", "apply_threshold") == "mltagger.models.rule.x_apply_threshold"
    )
    assert (
        script.mangled("serving.store", "Store.review") == "mltagger.serving.store.xǁStoreǁreview"
    )
    doc = tmp_path / "doc.md"
    doc.write_text(
        "| mutant | why |\n|---|---|\n"
        "| `mltagger.data.x_dedup_key__mutmut_3` | same text either way |\n"
    )
    assert script.equivalents(doc) == {
        "mltagger.data.x_dedup_key__mutmut_3": "same text either way"
    }


def test_every_listed_equivalent_is_a_mutant_of_a_function_in_scope():
    """An equivalent whose function left the scope (moved, renamed, removed) is a stale line of
    docs/testing.md: it would excuse nothing and hide that the function's mutants are gone."""
    script = _script()
    in_scope = set(script.module_of())
    listed = script.equivalents()
    assert listed, "docs/testing.md lists no equivalent mutants (is the table still read?)"
    stale = sorted(n for n in listed if n.rsplit("__mutmut_", 1)[0] not in in_scope)
    assert not stale, f"equivalents of functions not in SCOPE: {stale}"


def test_the_table_counts_equivalents_apart_and_scores_with_and_without_them():
    script = _script()
    fn = script.mangled("models.rule", "apply_threshold")
    res = {f"{fn}__mutmut_{i}": "killed" for i in range(1, 9)}
    res |= {f"{fn}__mutmut_9": "survived", f"{fn}__mutmut_10": "survived"}
    text, total = script.table(res, {f"{fn}__mutmut_10": "same either way"})
    assert script.scores(total) == (10, 8, 1, 80.0, pytest.approx(800 / 9))
    assert text.splitlines()[-1].split() == ["all", "10", "8", "2", "1", "0", "80.0%", "88.9%"]
