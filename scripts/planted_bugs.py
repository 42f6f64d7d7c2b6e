"""Put each bug of the mutation audit (issue 13) into the code, run the tests that must catch
it, and put the code back: one line per bug, caught or missed.

    python scripts/planted_bugs.py            # every bug
    python scripts/planted_bugs.py -k sweep   # bugs whose name contains "sweep"
    python scripts/planted_bugs.py --e2e      # their end-to-end tests instead (slow)

Exit 1 when a bug goes uncaught. It edits files under src/ in place and restores them in a
`finally`, so do not run it while another process reads src/ (a test run, a training run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mltagger"


@dataclass(frozen=True)
class Bug:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


FEEDBACK_OK = """        check_tag(body.correct_tag)
        try:
            record = tagger.store.add_feedback(body.item_id, body.correct_tag, body.comment)
        except StoreError as err:
            raise HTTPException(404, str(err)) from None
"""
FEEDBACK_BUG = """        try:
            record = tagger.store.add_feedback(body.item_id, body.correct_tag, body.comment)
        except StoreError as err:
            raise HTTPException(404, str(err)) from None
        check_tag(body.correct_tag)
"""
APP = "tests/unit/serving/test_api.py"

BUGS = [
    Bug(
        "review endpoint without the API key",
        "serving/api.py",
        '@app.post("/review/{item_id}", dependencies=[Depends(require_key)])',
        '@app.post("/review/{item_id}")',
        (f"{APP}::test_every_write_needs_the_api_key",),
    ),
    Bug(
        "every stored item needs_review=False",
        "serving/service.py",
        '"needs_review": pred["needs_review"],',
        '"needs_review": False,',
        (
            f"{APP}::test_confident_items_are_applied_and_unsure_ones_queued_for_review",
            f"{APP}::test_ingest_counts_what_it_stored_and_queues_the_unsure_items",
        ),
    ),
    Bug(
        "feedback stored before its tag is validated",
        "serving/api.py",
        FEEDBACK_OK,
        FEEDBACK_BUG,
        (f"{APP}::test_feedback_with_an_unknown_tag_is_refused_and_not_stored",),
    ),
    Bug(
        "review threshold chosen on test",
        "evaluation/protocol.py",
        'threshold = val_report["coverage"]["threshold"]',
        'threshold = evaluate_predictions(test_items, test_probs, labels, **kw)["coverage"]'
        '["threshold"]',
        (
            "tests/unit/evaluation/test_metrics.py::test_val_test_protocol_applies_the_threshold_chosen_on_val",
        ),
    ),
    Bug(
        "temperature applied as 1/T",
        "models/rule.py",
        "    z = logits / temperature\n",
        "    z = logits * temperature\n",
        (
            "tests/unit/models/test_rule.py::"
            "test_probabilities_are_softmax_of_logits_over_the_temperature",
        ),
    ),
    Bug(
        "per-tag precision at the threshold is the global figure",
        "evaluation/metrics.py",
        """            "per_class_precision": {
                t: v["precision"]""",
        """            "per_class_precision": {
                t: float(np.mean([g == p for g, p in zip(auto_gold, auto_pred, strict=True)]))""",
        (
            "tests/unit/evaluation/test_metrics.py::test_per_tag_precision_at_the_threshold_is_each_tags_own",
        ),
    ),
    Bug(
        "prepare_data stops comparing sha256",
        "data/prepare.py",
        'sha = verify_checksum(path, src.get("sha256"))',
        "sha = sha256_file(path)",
        ("tests/unit/data/test_split.py::test_prepare_data_refuses_a_source_whose_sha256_differs",),
    ),
    Bug(
        "a batch of exactly max_batch refused",
        "serving/api.py",
        "if len(body.items) > limits.max_batch:",
        "if len(body.items) >= limits.max_batch:",
        (f"{APP}::test_a_batch_of_exactly_max_batch_items_is_answered",),
    ),
    Bug(
        "body limit checks only a declared Content-Length",
        "serving/limits.py",
        "            if seen > self.max_bytes:",
        "            if False:",
        (f"{APP}::test_oversized_bodies_get_413_with_or_without_a_content_length",),
    ),
    Bug(
        "ingest summary's needs_review always 0",
        "serving/ingest.py",
        'needs_review += bool(out.prediction["needs_review"])',
        "needs_review += 0",
        (f"{APP}::test_ingest_counts_what_it_stored_and_queues_the_unsure_items",),
    ),
    Bug(
        "the sweep minimises (direction not passed)",
        "training/sweep.py",
        "        direction=str(sw.direction),\n",
        "",
        ("tests/e2e/test_sweep.py::test_the_best_trial_is_the_maximum_of_the_completed_ones",),
    ),
    Bug(
        "near-duplicate groups not kept in one split",
        "data/prepare.py",
        "        seed=sp.seed,\n        groups=groups,\n",
        "        seed=sp.seed,\n        groups=(),\n",
        ("tests/unit/data/test_split.py::test_near_duplicate_groups_land_in_one_split",),
    ),
]

SERVE = "tests/e2e/test_serve.py"
TRAIN = "tests/e2e/test_train.py"
# The end-to-end tests that assert the same behaviour through the real server, export or command
# line (`--e2e`); minutes per bug, since each run trains and exports the tiny model.
E2E = {
    "review endpoint without the API key": (
        f"{SERVE}::test_feedback_is_stored_and_sends_the_item_to_review",
    ),
    "every stored item needs_review=False": (
        f"{SERVE}::test_confident_items_are_applied_and_unsure_ones_queued_for_review",
        f"{SERVE}::test_ingest_applies_confident_tags_and_queues_the_unsure_items",
    ),
    "feedback stored before its tag is validated": (
        f"{SERVE}::test_feedback_is_stored_and_sends_the_item_to_review",
    ),
    "review threshold chosen on test": (
        f"{TRAIN}::test_test_split_gets_the_threshold_chosen_on_val",
    ),
    "temperature applied as 1/T": (
        f"{TRAIN}::test_predictor_reproduces_the_runs_calibrated_scores",
    ),
    "a batch of exactly max_batch refused": (
        f"{SERVE}::test_a_batch_of_exactly_max_batch_items_is_answered",
    ),
    "body limit checks only a declared Content-Length": (
        f"{SERVE}::test_an_oversized_chunked_body_gets_413",
    ),
    "ingest summary's needs_review always 0": (
        f"{SERVE}::test_ingest_applies_confident_tags_and_queues_the_unsure_items",
    ),
}


def run_tests(tests: tuple[str, ...]) -> bool:
    """True when the tests pass."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *tests,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only bugs whose name contains this")
    ap.add_argument(
        "--e2e",
        action="store_true",
        help="run each bug's end-to-end tests (E2E) instead of its fast ones",
    )
    args = ap.parse_args(argv)
    bugs = [b for b in BUGS if args.k.lower() in b.name.lower()]
    if args.e2e:
        bugs = [b for b in bugs if b.name in E2E]
    if not bugs:
        names = ", ".join(b.name for b in BUGS)
        print(f"no planted bug matches -k {args.k!r}; the bugs: {names}", file=sys.stderr)
        return 2
    missed = 0
    for bug in bugs:
        path = SRC / bug.file
        original = path.read_text()
        if original.count(bug.old) != 1:
            print(f"CANNOT PLANT  {bug.name}: the code it changes is not in {bug.file} once")
            missed += 1
            continue
        tests = E2E[bug.name] if args.e2e else bug.tests
        # With --e2e the clean run is left to `make test` (each run trains and exports anew).
        if not (args.e2e or run_tests(tests)):
            print(f"BROKEN        {bug.name}: its tests fail on the unchanged code")
            missed += 1
            continue
        t0 = time.perf_counter()
        try:
            path.write_text(original.replace(bug.old, bug.new))
            caught = not run_tests(tests)
        finally:
            path.write_text(original)
        missed += not caught
        verdict = "caught" if caught else "MISSED"
        print(f"{verdict:13s} {bug.name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"{len(bugs) - missed} of {len(bugs)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
