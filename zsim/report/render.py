"""Render report blocks to one self-contained HTML page and a Markdown twin.

A report is a list of blocks — :class:`Heading`, :class:`Para`, :class:`Pre`,
:class:`Table`, :class:`Figure` — rendered twice: HTML embeds each PNG as a base64 data URI
(no external resources, no scripts), Markdown links ``figures/<name>.png`` written beside it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Any, Sequence, Union


@dataclass(frozen=True)
class Heading:
    """A section heading (``level`` 2 or 3; the title is level 1)."""

    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Pre:
    """Preformatted text (a config, a command, a list)."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table: a header row and data rows (cells printed with ``str``)."""

    header: tuple
    rows: tuple


@dataclass(frozen=True)
class Figure:
    """A PNG figure, written as ``figures/<name>.png`` beside the Markdown."""

    name: str
    caption: str
    png: bytes


#: One block of a report.
Block = Union[Heading, Para, Pre, Table, Figure]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; white-space: pre-wrap; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def to_html(title: str, blocks: Sequence[Block]) -> str:
    """One self-contained HTML page."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Pre):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Table):
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in b.header) + "</tr>")
            for row in b.rows:
                out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
            out.append("</table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                       f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block {b!r}")  # an internal invariant, not input
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _md_cell(c: Any) -> str:
    return str(c).replace("|", "\\|")


def to_markdown(title: str, blocks: Sequence[Block], figure_dir: str = "figures") -> str:
    """The Markdown twin; figures are referenced as ``figure_dir/<name>.png``."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Pre):
            out += ["```", b.text, "```", ""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(c) for c in b.header) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(b.header) - 1)) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({figure_dir}/{b.name}.png)", "", f"*{b.caption}*", ""]
    return "\n".join(out)
