"""Griffe extension: render the reStructuredText math and roles of the docstrings as Markdown.

The docstrings are Google style with reStructuredText inline markup, which the API reference
renders as Markdown: ``:math:`x``` becomes ``$x$``, a ``.. math::`` block becomes ``$$ ... $$``
(both rendered by arithmatex and MathJax), cross-reference roles become code, and doctest lines
become ``pycon`` code blocks.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_MATH_ROLE = re.compile(r":math:`([^`]*)`")
_XREF_ROLE = re.compile(r":(?:class|meth|func|attr|mod|obj|data|exc):`~?([^`]*)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def convert(text: str) -> str:
    """Convert one docstring from reStructuredText markup to Markdown."""
    text = _MATH_ROLE.sub(lambda m: "$" + " ".join(m.group(1).split()) + "$", text)
    text = _XREF_ROLE.sub(lambda m: "`" + m.group(1).split(".")[-1] + "`", text)
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped == ".. math::":
            base = _indent(line)
            body: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                body.append(lines[i].strip())
                i += 1
            while body and not body[-1]:
                body.pop()
            pad = " " * base
            out += [pad + "$$"] + [pad + b for b in body if b] + [pad + "$$", ""]
            continue
        if stripped.startswith(">>>"):
            base = _indent(line)
            pad = " " * base
            out.append(pad + "```pycon")
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= base:
                out.append(pad + lines[i][base:])
                i += 1
            out.append(pad + "```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstMath(griffe.Extension):
    """Rewrite every docstring once it is loaded."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
