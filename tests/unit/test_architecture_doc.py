"""The layer picture in docs/architecture.md is the real import graph, so it cannot drift from the
code again (it once drew serving -> export -> training, which serving never imported).

    .venv/bin/python -m tests.unit.test_architecture_doc    # the arrows to paste into the doc
"""

from __future__ import annotations

import re

from tests.conftest import REPO

DOC = REPO / "docs" / "architecture.md"
ARROW = re.compile(r"^\s*([a-z_]+) --> ([a-z_]+)\s*$")


def package_graph() -> dict[str, set[str]]:
    """Each top-level package or module of mltagger -> those it imports directly (grimp, the
    graph import-linter checks), without the arrows another path already implies."""
    import grimp

    graph = grimp.build_graph("mltagger")
    tops = sorted(m for m in graph.modules if m.count(".") == 1 and not m.endswith("__main__"))
    direct = {
        a: {
            b
            for b in tops
            if a != b and graph.direct_import_exists(importer=a, imported=b, as_packages=True)
        }
        for a in tops
    }

    def reaches(start: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(start)
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(direct[m])
        return seen

    def short(m: str) -> str:
        return m.split(".", 1)[1]

    return {
        short(a): {short(b) for b in bs if b not in reaches(bs - {b})} for a, bs in direct.items()
    }


def arrows(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} --> {b}" for a in sorted(graph) for b in sorted(graph[a])]


def drawn() -> list[str]:
    """The arrows of the doc's first mermaid block."""
    block = DOC.read_text().split("```mermaid", 1)[1].split("```", 1)[0]
    return sorted(f"{m[1]} --> {m[2]}" for line in block.splitlines() if (m := ARROW.match(line)))


def test_the_layer_picture_is_the_import_graph():
    real = arrows(package_graph())
    assert drawn() == real, (
        "docs/architecture.md's picture differs from the imports; its arrows should be:\n"
        + "\n".join(f"  {a}" for a in real)
    )


if __name__ == "__main__":
    print("\n".join(f"  {a}" for a in arrows(package_graph())))
