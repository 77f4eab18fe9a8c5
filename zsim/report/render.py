"""Render report blocks to one self-contained HTML page and a Markdown twin.

A report is a list of blocks — ("h", level, text), ("p", text), ("pre", text),
("table", header, rows), ("img", name, caption, png_bytes) — rendered twice: HTML embeds each
PNG as a base64 data URI (no external resources, no scripts), Markdown links
``figures/<name>.png`` written beside it.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

Block = tuple

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
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "table":
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in b[1]) + "</tr>")
            for row in b[2]:
                out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
            out.append("</table>")
        elif kind == "img":
            data = base64.b64encode(b[3]).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                       f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _md_cell(c: Any) -> str:
    return str(c).replace("|", "\\|")


def to_markdown(title: str, blocks: Sequence[Block], figure_dir: str = "figures") -> str:
    """The Markdown twin; figures are referenced as ``figure_dir/<name>.png``."""
    out = [f"# {title}", ""]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "pre":
            out += ["```", b[1], "```", ""]
        elif kind == "table":
            out.append("| " + " | ".join(_md_cell(c) for c in b[1]) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(b[1]) - 1)) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
            out.append("")
        elif kind == "img":
            out += [f"![{b[2]}]({figure_dir}/{b[1]}.png)", "", f"*{b[2]}*", ""]
    return "\n".join(out)
