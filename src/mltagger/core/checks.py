"""What a config key may hold, declared once per job and checked right after composing.

Configs are user input. The YAML files carry no types, so Hydra lets a string through where a
number goes, a negative learning rate, a null path or a probability of 2; each used to surface
minutes later as a traceback deep inside a library (a TypeError in pathlib for a null path), or
as a run that trained on nonsense. Each layer declares its keys as a table, key -> `Rule`
(`"model.batch_size": integer(1)`), and `check_config` walks a table over a composed config and
raises `ConfigError` naming the key, the value and what is allowed. `user_errors()` turns that
into one line and exit 2, before any data or model is loaded.

A table is data, so a reader sees every constraint of a job in one place; the few rules that
relate two keys (a split that leaves no training data) stay small functions beside the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mltagger.core.errors import ConfigError
from mltagger.core.paths import resolve_path

Root = str | Path | None
_ABSENT = object()


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), repr(err))


def plain(value: Any) -> Any:
    """A config node as plain Python (lists, dicts), so rules and messages see the values."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


@dataclass(frozen=True)
class Rule:
    """What one key may hold. `accepts` sees a plain value, never None (null is `nullable`)."""

    allowed: str
    accepts: Callable[[Any], bool]
    nullable: bool = False
    # The key may be left out, or a section above it left out or null: nothing to check then.
    optional: bool = False

    def check(self, key: str, value: Any, root: Root) -> None:
        """Raise ConfigError when the (non-null) value breaks the rule."""
        if not self.accepts(value):
            raise ConfigError(f"{key}={value!r}: expected {self.allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _range(low: Any, high: Any, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def integer(
    low: int | None = None,
    high: int | None = None,
    *,
    nullable: bool = False,
    optional: bool = False,
    why: str = "",
) -> Rule:
    """An integer (not a bool, not a float such as 3.0) within [low, high]."""

    def accepts(v: Any) -> bool:
        return _is_int(v) and (low is None or v >= low) and (high is None or v <= high)

    allowed = f"an integer{_range(low, high)}" + (f" ({why})" if why else "")
    return Rule(allowed, accepts, nullable, optional)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
    nullable: bool = False,
    optional: bool = False,
    why: str = "",
) -> Rule:
    """A finite number; low/high are inclusive bounds, above/below exclusive ones."""
    lo = above if above is not None else low
    hi = below if below is not None else high

    def accepts(v: Any) -> bool:
        if not _is_number(v):
            return False
        if lo is not None and (v <= lo if above is not None else v < lo):
            return False
        return hi is None or (v < hi if below is not None else v <= hi)

    allowed = f"a number{_range(lo, hi, above is not None, below is not None)}"
    return Rule(allowed + (f" ({why})" if why else ""), accepts, nullable, optional)


def probability(*, nullable: bool = False, optional: bool = False) -> Rule:
    return number(0, 1, nullable=nullable, optional=optional)


def one_of(
    choices: Iterable[Any], *, what: str = "", nullable: bool = False, optional: bool = False
) -> Rule:
    """One of a fixed set of values (compared as they are: the string 'true' is not True)."""
    options = tuple(choices)
    allowed = f"{what + ', ' if what else ''}one of {list(options)}"
    return Rule(
        allowed, lambda v: any(v == o and type(v) is type(o) for o in options), nullable, optional
    )


def text(*, nullable: bool = False, optional: bool = False) -> Rule:
    """A non-blank string."""
    return Rule(
        "a non-blank string", lambda v: isinstance(v, str) and bool(v.strip()), nullable, optional
    )


def anything() -> Rule:
    """Any non-null value (e.g. a sweep's categorical choice: a number, a string or a bool)."""
    return Rule("a value", lambda _v: True)


def flag(*, optional: bool = False) -> Rule:
    """true or false (not the string 'yes', not 1)."""
    return Rule("true or false", lambda v: isinstance(v, bool), False, optional)


@dataclass(frozen=True)
class PathRule(Rule):
    """A path that must exist: a file, a folder, or a model folder (resolved as the job does)."""

    what: str = "file"
    from_root: bool = True  # relative to paths.root_dir (else to the working directory)
    hint: str = ""  # how to make the missing file or folder

    def check(self, key: str, value: Any, root: Root) -> None:
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ConfigError(f"{key}={value!r}: expected {self.allowed}")
        path = resolve_path(value, root) if self.from_root else Path(value).expanduser()
        found = path.is_file() if self.what == "file" else path.is_dir()
        if not found:
            hint = f"; {self.hint}" if self.hint else ""
            raise ConfigError(f"{key}={value}: no such {self.what} ({path}){hint}")


def path(
    what: str = "file",
    *,
    nullable: bool = False,
    optional: bool = False,
    from_root: bool = True,
    hint: str = "",
) -> Rule:
    """An existing file (what="file") or folder ("folder", "model folder", ...)."""
    allowed = f"the path of an existing {what}"
    return PathRule(allowed, bool, nullable, optional, what, from_root, hint)


@dataclass(frozen=True)
class SequenceRule(Rule):
    """A list whose every item follows `item`, with a least (and most) number of items."""

    item: Rule | None = None
    min_len: int = 0
    max_len: int | None = None

    def check(self, key: str, value: Any, root: Root) -> None:
        size = f"{self.min_len} or more" if self.max_len is None else f"{self.min_len}"
        if self.max_len is not None and self.max_len != self.min_len:
            size = f"{self.min_len} to {self.max_len}"
        if not isinstance(value, list | tuple) or not (
            self.min_len <= len(value) <= (self.max_len or len(value))
        ):
            raise ConfigError(f"{key}={value!r}: expected a list of {size} {self.allowed}")
        for i, item in enumerate(value):
            if self.item is None:
                continue
            if item is None:
                raise ConfigError(f"{key}[{i}]=null: expected {self.item.allowed}")
            self.item.check(f"{key}[{i}]", item, root)


def sequence(
    item: Rule,
    *,
    min_len: int = 0,
    max_len: int | None = None,
    nullable: bool = False,
    optional: bool = False,
) -> Rule:
    return SequenceRule(
        f"items, each {item.allowed}", bool, nullable, optional, item, min_len, max_len
    )


@dataclass(frozen=True)
class EntriesRule(Rule):
    """A list of mappings, each checked with its own table (e.g. data.sources)."""

    rules: Mapping[str, Rule] | None = None
    min_len: int = 1

    def check(self, key: str, value: Any, root: Root) -> None:
        if not isinstance(value, list | tuple) or len(value) < self.min_len:
            raise ConfigError(f"{key}={value!r}: expected {self.allowed}")
        rules = self.rules or {}
        for i, entry in enumerate(value):
            where = f"{key}[{i}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where}={entry!r}: expected a mapping with {sorted(rules)}")
            unknown = sorted(set(entry) - set(rules))
            if unknown:
                raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {sorted(rules)}")
            check_config(entry, rules, root=root, prefix=where)


def entries(rules: Mapping[str, Rule], *, what: str, min_len: int = 1) -> Rule:
    allowed = f"a list of {min_len} or more {what} (mappings with {sorted(rules)})"
    return EntriesRule(allowed, bool, False, False, rules, min_len)


def _lookup(cfg: Any, key: str, prefix: str, optional: bool) -> Any:
    """The value at a dotted key, _ABSENT when it (or a section above it) is left out."""
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        above = prefix + ".".join(parts[:i])
        if node is None:
            if optional:
                return _ABSENT
            raise ConfigError(f"{above}=null: expected a section with {'.'.join(parts[i:])}")
        if not isinstance(node, DictConfig | Mapping):
            raise ConfigError(f"{above}={plain(node)!r}: expected a section with {part!r}")
        # keys(), not `in`: a DictConfig says a key set to ??? is not in it.
        if part not in node.keys():  # noqa: SIM118
            return _ABSENT
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, part):
            raise ConfigError(f"{prefix}{key} is not set (???): give it a value")
        try:
            node = node[part]
        except OmegaConfBaseException as err:
            reason = _first_line(err)
            raise ConfigError(f"{prefix}{key}: cannot resolve its value ({reason})") from None
    return node


def check_config(
    cfg: Any, rules: Mapping[str, Rule], *, root: Root = None, prefix: str = ""
) -> None:
    """Check every key of `rules` in `cfg` (a DictConfig or a dict); the first problem raises.

    `prefix` is how the keys are named in messages (e.g. "data" for a data config checked on
    its own); `root` is what relative paths resolve against (paths.root_dir).
    """
    dotted = f"{prefix}." if prefix else ""
    for key, rule in rules.items():
        value = _lookup(cfg, key, dotted, rule.optional)
        if value is _ABSENT:
            if rule.optional:
                continue
            raise ConfigError(f"{dotted}{key} is missing: expected {rule.allowed}")
        try:
            value = plain(value)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{dotted}{key}: cannot resolve it ({_first_line(err)})") from None
        if value is None:
            if rule.nullable:
                continue
            raise ConfigError(f"{dotted}{key}=null: expected {rule.allowed}")
        rule.check(f"{dotted}{key}", value, root)


# Where every job reads and writes (conf/paths); output_dir is Hydra's and left out.
PATHS_RULES = {
    "paths.root_dir": text(),
    "paths.data_dir": text(optional=True),
    "paths.log_dir": text(optional=True),
    "paths.models_dir": text(optional=True),
}


def config_root(cfg: Any) -> str:
    """paths.root_dir, checked: what every relative path of a job's config resolves against."""
    check_config(cfg, PATHS_RULES)
    return str(cfg.paths.root_dir)
