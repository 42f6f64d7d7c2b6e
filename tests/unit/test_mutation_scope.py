"""`make mutation` names the functions it mutates (scripts/mutation.py): a renamed or moved
function must fail here, not drop out of the mutation score silently."""

from __future__ import annotations

import importlib
import importlib.util

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
