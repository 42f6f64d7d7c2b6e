"""Write the generated pages of the docs site: the service's API reference (docs/api.md and
docs/openapi.json, from its OpenAPI schema), the home page (docs/index.md, the README with its
links made relative to docs/) and the jobs table of docs/commands.md (from the job table,
mltagger.jobs, between its two marker lines).

Generated pages are never edited by hand, so they cannot drift from the code or the README:
`make docs` runs this first, and tests/e2e/test_docs.py fails when a committed page differs from
what this script writes. The schema does not depend on the model's weights, only on the approved
tags and the config's limits, so a stand-in tagger is enough to build the app.

    python scripts/docs_pages.py            # rewrite the generated pages
    python scripts/docs_pages.py --check    # exit 1 when one is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from mltagger.core.config import compose_config
from mltagger.jobs import render_markdown
from mltagger.serving.api import create_app
from mltagger.serving.store import Store

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "api.md"
SCHEMA = ROOT / "docs" / "openapi.json"
INDEX = ROOT / "docs" / "index.md"
COMMANDS = ROOT / "docs" / "commands.md"
JOBS_BEGIN = "<!-- jobs: generated from src/mltagger/jobs.py by scripts/docs_pages.py -->"
JOBS_END = "<!-- end of the generated jobs table -->"
METHODS = ("get", "post", "put", "patch", "delete")


def openapi() -> dict:
    # the pages (/ui) are left out of the document; they need no part of it
    cfg = compose_config("serve", ["api_key=docs", "ui.enabled=false"])
    tags = list(compose_config("train", []).data.tags)
    inference = SimpleNamespace(approved_tags=tags, model_version="<model version>")
    store = Store("sqlite:///:memory:")  # the app asks it whether any key exists
    tagger = SimpleNamespace(
        predictor=SimpleNamespace(inference=inference), store=store, batcher=None
    )
    try:
        return create_app(tagger, cfg).openapi()
    finally:
        store.close()


def _ref(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"array of {_ref(schema.get('items', {}))}"
    if "anyOf" in schema:
        return " or ".join(_ref(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    return schema.get("type", "any")


def _fields(schema: dict) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        text = " ".join(str(prop.get("description", "")).split())
        limits = [f"{k} {prop[k]}" for k in ("minLength", "maxLength", "minimum", "maximum")
                  if k in prop]  # fmt: skip
        if limits:
            text = (text + " " if text else "") + f"({', '.join(limits)})"
        rows.append(f"| `{name}` | {_ref(prop)} | {'yes' if name in required else 'no'} | {text} |")
    return rows


def render(spec: dict) -> str:
    out = [
        "# Service API reference",
        "",
        "Generated from the service's OpenAPI schema by `scripts/docs_pages.py` "
        "(`make docs`); do not edit by hand. The raw schema is [openapi.json](openapi.json); a "
        "running service also serves it at `/openapi.json` and an interactive page at `/docs`.",
        "",
    ]
    for path, ops in spec["paths"].items():
        for method in METHODS:
            if method not in ops:
                continue
            op = ops[method]
            out += [f"## `{method.upper()} {path}`", ""]
            if op.get("summary"):
                out += [op["summary"], ""]
            if op.get("description"):
                out += [" ".join(op["description"].split()), ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | type | required |", "|---|---|---|---|"]
                out += [
                    f"| `{p['name']}` | {p['in']} | {_ref(p.get('schema', {}))} | "
                    f"{'yes' if p.get('required') else 'no'} |"
                    for p in params
                ]
                out.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                out += [f"Request body: `{_ref(body['schema'])}`", ""]
            codes = ", ".join(
                f"`{c}` {r.get('description', '')}" for c, r in op["responses"].items()
            )
            out += [f"Responses: {codes}", ""]
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        out += ["## Schemas", ""]
        for name, schema in schemas.items():
            out += [f"### `{name}`", ""]
            if schema.get("description"):
                out += [" ".join(schema["description"].split()), ""]
            if schema.get("properties"):
                out += [*_fields(schema), ""]
    return "\n".join(out).rstrip() + "\n"


def home_page() -> str:
    """The README as the site's home page: links into docs/ become page links."""
    text = (ROOT / "README.md").read_text()
    note = "<!-- generated from README.md by scripts/docs_pages.py: edit the README -->\n"
    return note + text.replace("](docs/", "](")


def commands_page() -> str:
    """docs/commands.md with the jobs table between its markers rewritten from the job table."""
    text = COMMANDS.read_text()
    head, _, rest = text.partition(JOBS_BEGIN + "\n")
    _, _, tail = rest.partition(JOBS_END)
    return f"{head}{JOBS_BEGIN}\n{render_markdown()}{JOBS_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    args = parser.parse_args(argv)
    spec = openapi()
    pages = {
        PAGE: render(spec),
        SCHEMA: json.dumps(spec, indent=1, sort_keys=True) + "\n",
        INDEX: home_page(),
        COMMANDS: commands_page(),
    }
    if args.check:
        stale = [p.name for p, text in pages.items() if not p.is_file() or p.read_text() != text]
        if stale:
            print(f"stale: {stale}; run `python scripts/docs_pages.py`", file=sys.stderr)
            return 1
        return 0
    for path, text in pages.items():
        path.write_text(text)
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in pages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
