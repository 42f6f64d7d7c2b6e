"""mltagger's schedules on Dagster (the optional orchestrator; docs/cycle.md says why Dagster).

Dagster runs in its own virtual environment and calls the `mltagger` command, so its pins never
meet the service's (docs/studies/orchestrator.md measured the conflicts):

    python -m venv .venv-dagster && .venv-dagster/bin/pip install "dagster>=1.13,<1.14"
    MLTAGGER_BIN=$PWD/.venv/bin/mltagger \\
        .venv-dagster/bin/dagster dev -f deploy/dagster/definitions.py

What it gives over cron (deploy/cron, deploy/systemd): retries, a run history with each run's
output, and a sensor that starts the cycle after N new labels. Every job only runs a command
that is idempotent on its own (`mltagger cycle` holds a lock in the store and goes on from the
step it reached), so a retry or a second trigger cannot do anything twice.

Environment: MLTAGGER_BIN (the mltagger executable, default `mltagger` on PATH), MLTAGGER_HOME
(the install folder, default the current one), MLTAGGER_ARGS (config overrides for every
command, e.g. "store.url=postgresql+psycopg://..."), MLTAGGER_NEW_LABELS (default 200).
"""

import json
import os
import shlex
import subprocess

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    Failure,
    OpExecutionContext,
    RetryPolicy,
    RunRequest,
    ScheduleDefinition,
    SkipReason,
    job,
    op,
    sensor,
)

EXIT_BUSY = 75  # deploy/cron: a run that found the previous one still going


def mltagger(context: OpExecutionContext, *args: str) -> str:
    """Run one mltagger command in the install folder; its output goes to the run's log."""
    exe = os.environ.get("MLTAGGER_BIN", "mltagger")
    extra = shlex.split(os.environ.get("MLTAGGER_ARGS", ""))
    cmd = [exe, *args, *extra]
    context.log.info("running %s", shlex.join(cmd))
    proc = subprocess.run(
        cmd,
        cwd=os.environ.get("MLTAGGER_HOME") or None,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (proc.stdout + proc.stderr).splitlines()[-200:]:
        context.log.info(line)
    if proc.returncode != 0:
        raise Failure(
            description=f"{shlex.join(cmd)} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
        )
    return proc.stdout


@op(retry_policy=RetryPolicy(max_retries=2, delay=60))
def ingest_inbox(context: OpExecutionContext) -> None:
    """Every new file of var/inbox through `mltagger ingest` (deploy/ingest-inbox.sh)."""
    home = os.environ.get("MLTAGGER_HOME") or os.getcwd()
    proc = subprocess.run(
        ["bash", os.path.join(home, "deploy", "ingest-inbox.sh")],
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )
    context.log.info(proc.stdout + proc.stderr)
    if proc.returncode not in (0, EXIT_BUSY):
        raise Failure(description=f"ingest-inbox.sh exited {proc.returncode}")


@op(retry_policy=RetryPolicy(max_retries=1, delay=60))
def run_cycle(context: OpExecutionContext) -> None:
    """One run of the continual-learning cycle (it waits, moves on, or closes, by itself)."""
    mltagger(context, "cycle")


@op(retry_policy=RetryPolicy(max_retries=2, delay=60))
def run_monitor(context: OpExecutionContext) -> None:
    mltagger(context, "monitor")


@job
def ingest_job() -> None:
    ingest_inbox()


@job
def cycle_job() -> None:
    run_cycle()


@job
def monitor_job() -> None:
    run_monitor()


@sensor(job=cycle_job, minimum_interval_seconds=900, default_status=DefaultSensorStatus.RUNNING)
def new_labels(context):
    """The cycle after N new reviews (`mltagger cycle --if-new-labels N` reads the count)."""
    n = int(os.environ.get("MLTAGGER_NEW_LABELS", "200"))
    exe = os.environ.get("MLTAGGER_BIN", "mltagger")
    extra = shlex.split(os.environ.get("MLTAGGER_ARGS", ""))
    proc = subprocess.run(
        [exe, "cycle", "status", "--json", *extra],
        capture_output=True,
        text=True,
        cwd=os.environ.get("MLTAGGER_HOME") or None,
        check=False,
    )
    if proc.returncode != 0:
        return SkipReason(f"mltagger cycle status failed: {proc.stderr.strip()[-200:]}")
    status = json.loads(proc.stdout)
    if status.get("open"):
        return RunRequest(run_key=None)  # an open cycle moves on whenever it can
    if status.get("new_labels", 0) >= n:
        return RunRequest(run_key=f"labels-{status['new_labels']}-{status.get('last_cycle')}")
    return SkipReason(f"{status.get('new_labels', 0)} new labels (< {n})")


defs = Definitions(
    jobs=[ingest_job, cycle_job, monitor_job],
    schedules=[
        ScheduleDefinition(
            job=ingest_job, cron_schedule="5 * * * *", default_status=DefaultScheduleStatus.RUNNING
        ),
        ScheduleDefinition(
            job=monitor_job,
            cron_schedule="35 * * * *",
            default_status=DefaultScheduleStatus.RUNNING,
        ),
        ScheduleDefinition(
            job=cycle_job, cron_schedule="37 3 * * *", default_status=DefaultScheduleStatus.RUNNING
        ),
    ],
    sensors=[new_labels],
)
