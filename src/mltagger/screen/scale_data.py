"""A store of a million items for measuring the duplicate screen's index at scale
(`mltagger dedup-eval --scale ...`). A benchmark input only: nothing is trained on it.

What is in it, in order (a store of size n is the first n items, so the sizes are nested):

1. The benchmark's `all` store (`mltagger.screen.bench_data`, 100k items: the shipped items with
   the originals of every true copy first, the external lists, distinct PyPI summaries). Sizes up
   to 100k use nothing else, so they need no registry lists.
2. **Real** texts from the registry package lists of the environment (`--registry DIR`:
   `pypi.tsv`, `npm.tsv`, `nuget.tsv`; name as title, summary as description), distinct by
   normalised summary among themselves and from everything in (1) and the benchmark's queries,
   without the held-out query packages and the packages the fresh set cites; in a seeded shuffle
   so that growth mixes the registries. About 830k rows qualify; ~700k remain after (1) and the
   rules.
3. **Synthetic** texts (`source: synthetic`) for the rest: each description is a walk of a word
   bigram chain fitted on the real descriptions (each next word drawn among the words that follow
   the current one somewhere in the real texts, stopping where a real text stops or at the length
   of a real description drawn at random), each title two or three name parts of real packages
   joined by "-". Recombining a whole title with another item's whole description would put a
   second item with the same description next to a real one (a near copy, which the screen
   should flag); a chain walk shares phrases with many texts and the whole of none. A walk whose
   normalised text is already in the store is dropped.

Everything is deterministic for a seed. The items are cached as JSON lines (gzip) in the cache
folder, keyed by what they are made of, so reruns skip reading the lists.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import dedup_key
from mltagger.data.package_pool import MIN_SUMMARY, fresh_package_names
from mltagger.screen.bench_data import Bench

SCALE_VERSION = "scale-1"  # bump when the store's recipe changes: cached stores are rebuilt
SEED = 19
REGISTRY_LISTS = ("pypi.tsv", "npm.tsv", "nuget.tsv")
# npm rows may open with the list's own test note, which is not the author's text
_TESTED = re.compile(r"^\[tested here:[^\]]*\]\s*")
_NAME_PARTS = re.compile(r"[-_./@]+")


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def registry_texts(folder: Path) -> Iterator[tuple[str, str, str]]:
    """(list, name, summary) of every row of the registry lists in `folder` whose summary has at
    least MIN_SUMMARY characters. The lists' columns differ: the summary is the fifth column of
    pypi.tsv and the fourth of npm.tsv and nuget.tsv."""
    found = [folder / name for name in REGISTRY_LISTS if (folder / name).is_file()]
    if not found:
        raise DataError(f"no registry list ({', '.join(REGISTRY_LISTS)}) in {folder}")
    for path in found:
        column = 4 if path.name == "pypi.tsv" else 3
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(reader, None)
            for row in reader:
                if len(row) <= column:
                    continue
                summary = _TESTED.sub("", row[column]).strip()
                if len(summary) >= MIN_SUMMARY:
                    yield path.stem, row[0], summary


class WordChain:
    """A word bigram chain over real descriptions, for synthetic ones (see the module doc)."""

    _END = "\x00"

    def __init__(self, descriptions: list[str], names: list[str]) -> None:
        follows: dict[str, list[str]] = {}
        self._starts: list[str] = []
        self._lengths: list[int] = []
        for text in descriptions:
            words = text.split()
            if not words:
                continue
            self._starts.append(words[0])
            self._lengths.append(len(words))
            for a, b in zip(words, [*words[1:], self._END], strict=True):
                follows.setdefault(a, []).append(b)
        self._follows = follows
        parts = sorted({p for n in names for p in _NAME_PARTS.split(n.lower()) if len(p) > 1})
        if not self._starts or not parts:
            raise DataError("no real descriptions or names to make synthetic items from")
        self._parts = parts

    def item(self, rng: random.Random) -> tuple[str, str]:
        """One synthetic (title, description)."""
        limit = rng.choice(self._lengths) + 2
        words = [rng.choice(self._starts)]
        while len(words) < limit:
            nxt = rng.choice(self._follows[words[-1]])
            if nxt == self._END:
                break
            words.append(nxt)
        title = "-".join(rng.choice(self._parts) for _ in range(rng.choice((2, 2, 3))))
        return title, " ".join(words)


def _key(bench: Bench, registry: Path | None, size: int, seed: int) -> str:
    lists = []
    if registry is not None:
        for name in REGISTRY_LISTS:
            p = registry / name
            if p.is_file():
                lists.append((name, p.stat().st_size))
    store = bench.stores["all"]
    probe = [(it["title"], it["description"]) for it in store[:: max(1, len(store) // 500)]]
    blob = json.dumps([SCALE_VERSION, size, seed, len(store), lists, probe], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_scale_store(
    bench: Bench, size: int, registry: Path | None, seed: int = SEED
) -> tuple[list[dict], dict]:
    """The first `size` items of the scale store (see the module doc) and what they are made of.
    Beyond the benchmark's own store it needs `registry` (a folder with the registry lists)."""
    base = bench.stores["all"][:size]
    info = {"benchmark_store": len(base), "real_registry": 0, "synthetic": 0, "seed": seed}
    if len(base) == size:
        return list(base), info
    if registry is None:
        raise DataError(
            f"a store of {size} items needs the registry package lists beyond the benchmark's "
            f"{len(base)}: pass --registry DIR (a folder with {', '.join(REGISTRY_LISTS)})"
        )
    items = [{**it, "source": it.get("source", "benchmark")} for it in base]
    seen = {dedup_key(it["description"] or "") for it in base}
    seen |= {dedup_key(q["description"] or "") for q in bench.queries + bench.copies}
    names_out = fresh_package_names(resolve_path("data/eval/fresh.json"))
    names_out |= {_norm_name(q["title"]) for q in bench.queries if q["source"] == "registry"}
    extra, by_list, names = [], {}, []
    for lst, name, summary in registry_texts(registry):
        key = dedup_key(summary)
        if key in seen or _norm_name(name) in names_out:
            continue
        seen.add(key)
        extra.append({"title": name, "description": summary, "url": None, "source": lst})
        by_list[lst] = by_list.get(lst, 0) + 1
        names.append(name)
    rng = random.Random(seed)
    rng.shuffle(extra)
    take = extra[: size - len(items)]
    items += take
    info["real_registry"] = len(take)
    info["real_registry_available"] = len(extra)
    info["real_by_list"] = {k: sum(it["source"] == k for it in take) for k in sorted(by_list)}
    missing = size - len(items)
    if missing:
        chain = WordChain(
            [it["description"] or "" for it in items], names + [it["title"] for it in base]
        )
        dropped = in_a_row = 0
        while len(items) < size:
            title, description = chain.item(rng)
            key = dedup_key(description)
            if key in seen or len(description) < MIN_SUMMARY:
                dropped += 1
                in_a_row += 1
                if in_a_row > 2000:  # the chain keeps repeating itself (measured: 1M never does)
                    raise DataError(
                        f"the word chain made only {len(items) - size + missing} new texts of "
                        f"{missing}: too few real texts to fill from"
                    )
                continue
            in_a_row = 0
            seen.add(key)
            items.append(
                {"title": title, "description": description, "url": None, "source": "synthetic"}
            )
        info["synthetic"] = missing
        info["synthetic_walks_dropped"] = dropped
    return items, info


def load_scale_store(
    bench: Bench, size: int, registry: Path | None, cache: Path, seed: int = SEED
) -> tuple[list[dict], dict, str]:
    """`build_scale_store`, cached in `cache` (JSON lines, gzip): (items, info, cache key)."""
    key = _key(bench, registry, size, seed)
    path = cache / f"store-{size}-{key}.jsonl.gz"
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            info = json.loads(fh.readline())
            items = [json.loads(line) for line in fh]
        return items, info, key
    items, info = build_scale_store(bench, size, registry, seed)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(info) + "\n")
        for it in items:
            row = {k: it.get(k) for k in ("title", "description", "url", "source")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return items, info, key
