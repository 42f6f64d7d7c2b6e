#!/usr/bin/env bash
# Ingest every file dropped in var/inbox/ (*.jsonl, in name order), then move it to
# var/inbox/done/ with the time it was done in front of its name. The hourly ingest job of
# deploy/cron/mltagger.cron and deploy/systemd/mltagger-ingest.service.
#
#   deploy/ingest-inbox.sh [overrides ...]     e.g. store.url=postgresql+psycopg://...
#
# Overrides are passed to every `mltagger ingest`. Producers write a file under a name the glob
# skips (a leading dot, or another suffix) and rename it to *.jsonl when it is complete, so a
# half-written file is never read. Bad rows go to var/inbox/rejects/NAME.rejects.jsonl (outside
# the glob). A file whose ingest fails stays in the inbox and is tried again next run (ingest
# adds nothing twice); the others still run, and the script exits 1 at the end.
# MLTAGGER_HOME: the install folder (default: the folder above this script);
# MLTAGGER: the command (default: .venv/bin/mltagger there).
set -euo pipefail

cd "${MLTAGGER_HOME:-$(dirname "$(readlink -f "$0")")/..}"
mltagger=${MLTAGGER:-.venv/bin/mltagger}
inbox=var/inbox
mkdir -p "$inbox/done" "$inbox/rejects"

shopt -s nullglob
files=("$inbox"/*.jsonl)
failed=0
for f in "${files[@]}"; do
    name=$(basename -- "$f")
    if ! "$mltagger" ingest --quiet --rejects "$inbox/rejects/${name%.jsonl}.rejects.jsonl" \
        "$f" "$@"; then
        echo "ingest-inbox: $f failed; left in $inbox for the next run" >&2
        failed=1
        continue
    fi
    mv -- "$f" "$inbox/done/$(date -u +%Y%m%dT%H%M%SZ)-$name"
done
exit "$failed"
