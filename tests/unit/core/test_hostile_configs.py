"""Configs are input too. Every option of every config group composes with every job (train,
distill, baselines, cv, sweep, export, label-issues, serve) and passes that job's checks; and a
table of wrong overrides per job (null or missing paths, wrong types, unknown keys, out-of-range
numbers) ends as one line on stderr and exit 2, never a traceback: what Hydra refuses and one
value per job through `mltagger <job>` run in this process (before the job's module is imported
or a run folder made), the other values on the job's composed config as Hydra applies them. All
in-process (Hydra's compose API), so the module stays fast.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mltagger import cli
from mltagger.core.checks import Rule, check_config
from mltagger.core.config import compose_config
from mltagger.core.errors import EXIT_USAGE, ConfigError, user_errors
from mltagger.jobs import HYDRA
from mltagger.jobs import JOBS as JOB_TABLE
from tests.conftest import REPO

CONF = REPO / "conf"
# Groups that are Hydra's own (hydra/) or a machine's (local/, gitignored), not a job's choice.
NOT_CHOICES = {"hydra", "local"}


def job_table() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """job -> (config name, its check, the overrides `mltagger <job>` starts from)."""
    return {  # serve: mltagger.serving.server composes and checks it
        job.name: (job.config, job.check, job.fixed) for job in JOB_TABLE.values() if job.check
    }


JOBS = job_table()
# What `mltagger <job>` with no arguments composes: its fixed overrides (for the sweep the
# default search space, a default the command line may change, not a fixed choice).
STARTS = {job: [*fixed] for job, (_c, _k, fixed) in JOBS.items()}
FIXED = {"distill": {"experiment"}, "label-issues": {"data"}}  # what the job itself chooses


def groups(config_name: str) -> dict[str, tuple[str | None, list[str]]]:
    """The config groups a primary config draws from (following `- train` style includes), as
    override keys (`baseline@baselines.rules`) -> (default option, options in conf/<group>/)."""
    found: dict[str, tuple[str | None, list[str]]] = {}
    for entry in yaml.safe_load((CONF / f"{config_name}.yaml").read_text())["defaults"]:
        if isinstance(entry, str):
            if entry != "_self_":
                found.update(groups(entry))
            continue
        ((key, default),) = entry.items()
        key = key.removeprefix("optional ")
        group = key.split("@")[0]
        if group not in NOT_CHOICES:
            found[key] = (default, sorted(p.stem for p in (CONF / group).glob("*.yaml")))
    return found


def job_groups(job: str) -> dict[str, tuple[str | None, list[str]]]:
    """The groups a job may vary, with the job's own default (`mltagger <job>` with no args)."""
    config, _, fixed = JOBS[job]
    chosen = dict(f.split("=", 1) for f in fixed)
    return {
        key: (chosen.get(key, default), options)
        for key, (default, options) in groups(config).items()
        if key not in FIXED.get(job, ())
    }


def option_rounds(job: str) -> list[list[str]]:
    """Command lines that together pick every option of every group of the job: round 0 is
    the job's default (what the wrong values below start from), round k then takes the k-th
    option each group has not had yet. A few composes per job instead of one per option (and
    train and sweep share theirs after round 0)."""
    _, _, fixed = JOBS[job]
    left = {k: [o for o in opts if o != default] for k, (default, opts) in job_groups(job).items()}
    left = {k: v for k, v in left.items() if v}
    rest = [f for f in fixed if f.split("=", 1)[0] not in left]  # e.g. label-issues' task_name
    rounds = [STARTS[job]]
    for k in range(max((len(v) for v in left.values()), default=0)):
        rounds.append([*rest, *(f"{key}={opts[k % len(opts)]}" for key, opts in left.items())])
    return rounds


@pytest.fixture(scope="module")
def project_root(tmp_path_factory) -> Path:
    """A project root with the shipped data and empty stand-ins for the model folders the
    defaults name (models/latest, models/export), which a fresh checkout does not have."""
    root = tmp_path_factory.mktemp("project")
    (root / "data").symlink_to(REPO / "data", target_is_directory=True)
    for folder in ("latest", "export", "teachers/all-mpnet-base-v2"):
        (root / "models" / folder).mkdir(parents=True)
    return root


@pytest.fixture(autouse=True)
def _root_env(project_root, monkeypatch):
    monkeypatch.setenv("MLTAGGER_ROOT", str(project_root))  # paths.root_dir


def test_every_job_is_covered_and_every_group_option_is_picked():
    assert set(JOBS) == {*(j.name for j in JOB_TABLE.values() if j.kind == HYDRA), "serve"}
    train_groups = groups("train")
    assert train_groups["data"] == (
        "with_pool",
        ["projects", "with_external", "with_other", "with_packages", "with_pool"],
    )
    assert {"model", "trainer", "logger", "experiment", "hparams_search", "debug"} <= set(
        train_groups
    )
    assert set(groups("baselines")) >= {"baseline@baselines.rules", "baseline@baselines.tfidf"}
    for job in JOBS:
        rounds = option_rounds(job)
        picked = {o for r in rounds[1:] for o in r}
        for key, (default, options) in job_groups(job).items():
            picked.add(f"{key}={default}")  # round 0
            assert {f"{key}={o}" for o in options} <= picked, (job, key)


_COMPOSED: dict[tuple[str, tuple[str, ...]], DictConfig] = {}


def composed(config: str, overrides: Sequence[str]) -> DictConfig:
    """compose_config, once per distinct command line (train shares rounds with sweep and one
    with distill): composing is what costs time here (~0.2 s each). Each key is set once in a
    round, so the order of the overrides does not matter."""
    key = (config, tuple(sorted(overrides)))
    if key not in _COMPOSED:
        _COMPOSED[key] = compose_config(config, overrides)
    return _COMPOSED[key]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_group_option_composes_and_passes_the_job_checks(job):
    config, check, _ = JOBS[job]
    for overrides in option_rounds(job):
        cli._load(check)(composed(config, overrides))  # raises ConfigError on a refused value


# Through `mltagger <job>` in this process: what Hydra itself refuses (unknown keys, a missing
# option, bad syntax) and one value per job, so every job's command is seen to run its check
# before its module is imported. -> (override, what the one line must say).
COMMAND_LINE = {
    "train": [
        ("data.label_noise.layer=null", "data.label_noise.layer=null: "),
        ("foo=1", "bad config override: Could not override 'foo'"),
        ("data=nope", "bad config override: In 'train': Could not find 'data/nope'"),
        ("trainer.max_epochs=[1,", "bad config override: "),
    ],
    "distill": [("distill.teacher=models/nowhere", "distill.teacher=models/nowhere: no such")],
    "baselines": [("run=[rules,forest]", "'forest' is not a baseline")],
    "cv": [("cv.folds=1", "cv.folds=1: expected an integer >= 2 (cross-validation needs")],
    "sweep": [
        ("~hparams_search", "no search space"),
    ],
    "export": [("teacher=models/nowhere", "teacher=models/nowhere: no such model folder")],
    "label-issues": [("data=projects", "data config 'projects' has no label_noise section")],
    "serve": [
        ("model_dir=models/nowhere", "model_dir=models/nowhere: no such model folder"),
        ("nope=1", "bad config override: Could not override 'nope'"),
    ],
}

# Wrong values, applied to each job's composed default config as Hydra applies a command-line
# value (its override parser, then OmegaConf.update), and checked as the command checks them.
VALUES = {
    "train": [
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1: expected an integer >= 1"),
        ("trainer.max_epochs=true", "trainer.max_epochs=True: expected an integer >= 1"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5: expected an integer >= 1"),
        ("model.lr=fast", "model.lr='fast': expected a number >= 0"),
        ("optim.lr=-0.001", "optim.lr=-0.001: expected a number >= 0"),
        ("model.lr=nan", "model.lr=nan: expected a number >= 0"),
        ("model.batch_size=0", "model.batch_size=0: expected an integer >= 1"),
        ("model.dropout=1", "model.dropout=1: expected a number in [0, 1)"),
        ("distill.alpha=1.5", "distill.alpha=1.5: expected a number in [0, 1]"),
        ("trainer.monitor=val/f1", "trainer.monitor='val/f1': expected a val metric"),
        ("trainer.mixed_precision=fp8", "trainer.mixed_precision='fp8': expected one of"),
        ("update_latest=yes", "update_latest='yes': expected true or false"),
        ("data.sources=null", "data.sources=null: expected a list of 1 or more sources"),
        ("data.sources=[{name: x, path: null}]", "data.sources[0].path=null: expected"),
        ("data.sources=[{name: x, path: nowhere.json}]", "path=nowhere.json: no such file"),
        ("data.sources=[{name: x, pth: a.json}]", "data.sources[0]: unknown key 'pth'"),
        ("data.fresh.path=nowhere.json", "data.fresh.path=nowhere.json: no such file"),
        ("data.reviewed_labels=nowhere.json", "data.reviewed_labels=nowhere.json: no such"),
        ("data.label_noise.layer=nowhere.json", "data.label_noise.layer=nowhere.json: no such"),
        ("data.label_noise.action=fix", "data.label_noise.action='fix': expected one of"),
        ("data.near_duplicates=null", "data.near_duplicates=null: expected a section"),
        ("data.split.val_size=0.9", "expected a sum below 1"),
        ("data.fallback_tag=misc", "data.fallback_tag='misc': expected one of data.tags"),
        ("data.tags=[other]", "data.tags=['other']: expected a list of 2 or more"),
        ("model.lr=${nope}", "model.lr: cannot resolve its value"),
        ("resume=/nonexistent/run", "resume=/nonexistent/run: no such folder"),
        ("paths.root_dir=null", "paths.root_dir=null: expected a non-blank string"),
    ],
    "distill": [
        ("distill.teacher=null", "model.name_or_path=null: expected a non-blank string"),
        ("distill.temperature=0", "distill.temperature=0: expected a number > 0"),
        ("distill.keep_layers=[-1]", "distill.keep_layers[0]=-1: expected an integer >= 0"),
    ],
    "baselines": [
        ("baselines.tfidf.C=-1", "baselines.tfidf.C=-1: expected a number > 0"),
        ("baselines.tfidf.max_iter=many", "baselines.tfidf.max_iter='many': expected"),
        ("data.near_duplicates.threshold=1.5", "data.near_duplicates.threshold=1.5: expected"),
        ("eval.precision_target=85", "eval.precision_target=85: expected a number in (0, 1]"),
    ],
    "cv": [
        ("cv.inner_val_size=1", "cv.inner_val_size=1: expected a number in (0, 1)"),
        ("cv.seeds=[]", "cv.seeds=[]: expected a list of 1 or more"),
    ],
    "sweep": [
        ("sweep.metric=val/nope", "sweep.metric='val/nope': expected a val metric"),
        ("sweep.n_trials=0", "sweep.n_trials=0: expected an integer >= 1"),
        ("sweep.direction=up", "sweep.direction='up': expected one of"),
        ("sweep.sampler.name=grid", "sweep.sampler.name='grid': expected one of"),
    ],
    "export": [
        ("teacher=null", "teacher=null: expected the path of an existing model folder"),
        ("batch_size=0", "batch_size=0: expected an integer >= 1"),
        ("max_f1_drop=-0.1", "max_f1_drop=-0.1: expected a number in [0, 1]"),
        ("quantization.variants=[int8,int4]", "quantization.variants: 'int4' is not a variant"),
        ("ship_rule.min_val_agreement=2", "ship_rule.min_val_agreement=2: expected a number"),
        ("quantize=maybe", "quantize='maybe': expected true or false"),
    ],
    "label-issues": [
        ("data.label_noise.folds=1", "data.label_noise.folds=1: expected an integer >= 2"),
        ("data.label_noise.layer=null", "data.label_noise.layer=null: "),
    ],
    "serve": [
        ("port=-1", "port=-1: expected an integer in [1, 65535]"),
        ("port=http", "port='http': expected an integer in [1, 65535]"),
        ("limits.max_batch=0", "limits.max_batch=0: expected an integer >= 1"),
        ("dedup.screen_file=null", "dedup.screen_file=null: expected a non-blank string"),
        ("dedup.screen_file=nowhere.json", "dedup.screen_file=nowhere.json: no such file"),
        ("monitor.audit_share=1.5", "monitor.audit_share=1.5: expected a number in [0, 1]"),
        ("dedup.near_threshold=-0.5", "dedup.near_threshold=-0.5: expected a number in [0, 1]"),
        ("rollout=canary:150", "rollout='canary:150': expected shadow or canary:<percent>"),
        ("api_key=12345", "api_key=12345: expected a non-blank string"),
        ("server.trusted_proxies=[proxy]", "server.trusted_proxies[0]='proxy': expected an IP"),
        ("server.trusted_proxies=10.0.0.1", "server.trusted_proxies='10.0.0.1': expected a list"),
        ("server.header_timeout=0", "server.header_timeout=0: expected a number in (0, 3600]"),
        ("server.max_connections=0", "server.max_connections=0: expected an integer >= 1"),
        ("batching.max_batch=0", "batching.max_batch=0: expected an integer in [1, 1024]"),
        ("batching.max_wait_ms=5000", "batching.max_wait_ms=5000: expected a number in [0, 1000]"),
        ("batching.enabled=sometimes", "batching.enabled='sometimes': expected true or false"),
    ],
}


def test_every_job_has_wrong_overrides():
    assert set(COMMAND_LINE) == set(VALUES) == set(JOBS)


def one_line(err: str, says: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert says in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def no_heavy_work(monkeypatch, project_root):
    """Fails the test if a job's module is imported or the serve model loaded before the
    config check ended the command, or if a run folder was made."""
    loaded: list[str] = []
    real_load = cli._load
    jobs = {job.target for job in JOB_TABLE.values() if job.kind == HYDRA}

    def spy(target: str):
        if target in jobs:
            loaded.append(target)
            raise AssertionError(f"{target} was loaded before its config was checked")
        return real_load(target)

    def no_model(_cfg):
        raise AssertionError("the model was loaded before the serve config was checked")

    from mltagger.serving import server  # here: only these cases need the service's module

    monkeypatch.setattr(cli, "_load", spy)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra_job rewrites it
    monkeypatch.setattr(server, "build_tagger", no_model)
    monkeypatch.setattr(server, "check_model_dir", no_model)
    yield loaded
    assert not loaded
    assert not (project_root / "runs").exists(), "a run folder was made for a refused config"


@pytest.mark.parametrize(
    ("job", "override", "says"),
    [(job, override, says) for job, cases in COMMAND_LINE.items() for override, says in cases],
)
def test_a_bad_command_line_is_one_line_and_exit_2(job, override, says, no_heavy_work, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([job, override])
    assert stop.value.code == EXIT_USAGE
    one_line(capsys.readouterr().err, says)


def with_override(cfg: DictConfig, override: str) -> DictConfig:
    """A copy of cfg with one command-line value applied as Hydra applies it."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=True)
    return cfg


@pytest.mark.parametrize(
    ("job", "override", "says"),
    [(job, override, says) for job, cases in VALUES.items() for override, says in cases],
)
def test_a_wrong_value_is_one_line_and_exit_2(job, override, says, capsys):
    config, check, _ = JOBS[job]
    default = composed(config, STARTS[job])  # round 0: it passes, the override is what fails
    cfg = with_override(default, override)
    with pytest.raises(SystemExit) as stop, user_errors():
        cli._load(check)(cfg)
    assert stop.value.code == EXIT_USAGE
    one_line(capsys.readouterr().err, says)


def test_a_bug_is_not_turned_into_a_one_line_user_error():
    """Only what the rules refuse is a ConfigError; a rule that crashes (a bug) still raises."""

    def broken(value):
        return value.no_such_attribute

    with pytest.raises(AttributeError), user_errors():
        check_config({"a": 1}, {"a": Rule("anything", broken)})
    with pytest.raises(ConfigError, match=r"a=1: expected something else"):
        check_config({"a": 1}, {"a": Rule("something else", lambda v: v != 1)})


def test_a_good_command_line_still_reaches_the_job_once(monkeypatch, tmp_path):
    """The check runs before Hydra's app, and a config it passes goes on to the job as before."""
    import logging

    from hydra.core.global_hydra import GlobalHydra

    calls = []
    real_load = cli._load
    train_target = JOB_TABLE["train"].target

    def load(target: str):
        if target == train_target:
            return lambda cfg: calls.append(cfg.trainer.max_epochs)
        return real_load(target)

    monkeypatch.setattr(cli, "_load", load)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra's app sets up logging: put it back
    try:
        assert cli.main(["train", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path}"]) == 0
    finally:
        GlobalHydra.instance().clear()
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert calls == [3]
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def test_a_bad_value_behind_hydras_own_flags_is_still_one_line(monkeypatch, tmp_path, capsys):
    """Hydra's flags (--multirun, --config-name, ...) skip the pre-check; the rules then run
    inside the Hydra app, before the job: one line, exit 2, and the job never starts."""
    from mltagger.core.config import hydra_entry
    from mltagger.training.config_rules import check_train_config

    monkeypatch.setattr(
        sys,
        "argv",
        ["mltagger train", "--config-name=train", "trainer.max_epochs=-1",
         f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null"],
    )  # fmt: skip
    started = []
    with pytest.raises(SystemExit) as err:
        hydra_entry("train", started.append, check=check_train_config)
    assert err.value.code == EXIT_USAGE and started == []
    assert "trainer.max_epochs=-1: expected an integer >= 1" in capsys.readouterr().err
