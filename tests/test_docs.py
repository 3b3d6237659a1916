"""Every ```python block of the documentation pages runs, page by page, in one namespace."""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "```python" in p.read_text())
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_guides_have_code():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    for page in ["getting_started.md", "guides/own_model.md", "guides/em.md"]:
        assert page in names


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_page_code_runs(page):
    blocks = BLOCK.findall(page.read_text())
    assert blocks, page
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
