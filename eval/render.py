"""Rendering a built report: Markdown (for a pull request; figures linked from `report_files/`) and a
self-contained HTML page (inline CSS, figures embedded as base64 PNG, no scripts).

`eval/report.py` computes everything into a `Report` of `Table`s (text cells, the best of each
column marked); this module only prints it, the same sections in the same order in both formats,
escaping every cell for its format (a stage name or warning can hold `|`, `<` or a newline).
"""

import base64
import html
from dataclasses import dataclass, field

from eval.verdict import Verdict

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;background:#e6f4ea}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:6px 10px;margin:4px 0}
img{max-width:100%;margin:1em 0}code{background:#f3f3f3;padding:1px 4px}figure{margin:0}figcaption{font-weight:bold}"""


@dataclass
class Table:
    """Headers and rows of text cells; a cell marked True is the best of its column."""

    headers: list[str]
    rows: list[list[tuple[str, bool]]] = field(default_factory=list)


@dataclass
class Report:
    """Everything both renderers print, already computed."""

    title: str
    commands: list[str]
    protocol: Table
    caption: str
    summary: Table
    warnings: list[str]
    figures: list[tuple[str, str, bytes]]  # (title, file name, PNG bytes)
    latency: Table
    verdict: Verdict | None = None  # attention swaps judged against their teacher; None when the runs have none
    fusions: Table = field(default_factory=lambda: Table(["Stage", "Fused ops in the artifact"]))
    traffic: Table = field(default_factory=lambda: Table(["Stage"]))  # real test texts beside the fixed shapes (eval/traffic.py)
    traffic_caption: str = ""


def verdict_tables(verdict: Verdict) -> tuple[Table, Table]:
    """The verdict's rows and LRA's reference numbers as report tables (nothing ranked)."""
    plain = lambda rows: [[(cell, False) for cell in row] for row in rows]  # noqa: E731
    return Table(verdict.headers, plain(verdict.rows)), Table(verdict.lra_headers, plain(verdict.lra_rows))


VERDICT_CAPTION = ("Each swapped stage against its run's full-attention teacher on the task's test split; Δ in accuracy "
                   "points; agreement with the run's baseline stage; latency (p50) and peak memory at the task's seq_len, "
                   "ratios against the teacher (speed-up: teacher / stage; memory: stage / teacher).")
LRA_CAPTION = ("Reference, not a target: Long Range Arena's published test accuracies (Tay et al. 2021, Table 1; ListOps "
               "up to 2K tokens, Text = byte-level IMDb at 4K), other tasks, lengths and models than ours.")


def md_escape(text: str) -> str:
    """Text safe in a Markdown table cell or paragraph: no HTML tags, no column breaks, one line.

    Outside `code spans` a `<` becomes `&lt;` (rendered as `<`, never a tag); inside one it is
    kept as is, since a code span shows an entity such as `&lt;` literally."""
    parts = text.replace("\n", " ").split("`")
    parts = [p.replace("|", "\\|") if i % 2 else p.replace("<", "&lt;").replace("|", "\\|") for i, p in enumerate(parts)]
    return "`".join(parts)


def md_cell(text: str, best: bool) -> str:
    return f"**{md_escape(text)}**" if best else md_escape(text)


def markdown_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(md_escape(h) for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
    return lines + ["| " + " | ".join(md_cell(*c) for c in row) + " |" for row in table.rows]


def render_markdown(report: Report, files_dir: str) -> str:
    """The Markdown report; figures are linked from `files_dir` (relative to the report)."""
    lines = [f"# slimformer report: {md_escape(report.title)}", ""]
    lines += [f"Reproduce: `{c}`" for c in report.commands] + [""]
    lines += ["## Summary", "", report.caption, ""] + markdown_table(report.summary) + [""]
    lines += [f"> ⚠️ {md_escape(w)}  " for w in report.warnings] + [""] * bool(report.warnings)
    if report.traffic.rows:
        lines += ["## Real traffic", "", md_escape(report.traffic_caption), ""] + markdown_table(report.traffic) + [""]
    if report.verdict:
        verdict, lra = verdict_tables(report.verdict)
        lines += ["## Efficient attention: verdict", "", VERDICT_CAPTION, ""] + markdown_table(verdict) + [""]
        lines += [f"- {md_escape(n)}" for n in report.verdict.notes] + [""] * bool(report.verdict.notes)
        lines += [LRA_CAPTION, ""] + markdown_table(lra) + [""]
    if report.figures:
        lines += ["## Figures", ""] + [f"![{t}]({files_dir}/{name})" for t, name, _ in report.figures] + [""]
    if report.fusions.rows:
        lines += ["## Fused operators", ""] + markdown_table(report.fusions) + [""]
    lines += ["## Protocol", ""] + markdown_table(report.protocol) + [""]
    lines += ["## All latency records", "", f"<details><summary>{len(report.latency.rows)} records</summary>", ""]
    return "\n".join(lines + markdown_table(report.latency) + ["", "</details>", ""])


def html_cell(text: str, best: bool) -> str:
    return f'<td class="best">{html.escape(text)}</td>' if best else f"<td>{html.escape(text)}</td>"


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(html_cell(*c) for c in row) + "</tr>\n" for row in table.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def render_html(report: Report) -> str:
    """The self-contained HTML report: inline CSS, figures as base64 PNG data URIs, no scripts."""
    title = html.escape(report.title)
    caption = html.escape(report.caption).replace("in bold", "highlighted")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>slimformer report: {title}</title><style>{CSS}</style></head><body>",
             f"<h1>slimformer report: {title}</h1>"]
    parts += [f"<p>Reproduce: <code>{html.escape(c)}</code></p>" for c in report.commands]
    parts += ["<h2>Summary</h2>", f"<p>{caption}</p>", html_table(report.summary)]
    parts += [f'<p class="warn">⚠️ {html.escape(w)}</p>' for w in report.warnings]
    if report.traffic.rows:
        parts += ["<h2>Real traffic</h2>", f"<p>{html.escape(report.traffic_caption)}</p>", html_table(report.traffic)]
    if report.verdict:
        verdict, lra = verdict_tables(report.verdict)
        parts += ["<h2>Efficient attention: verdict</h2>", f"<p>{html.escape(VERDICT_CAPTION)}</p>", html_table(verdict)]
        parts += ["<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.verdict.notes)
                  + "</ul>"] * bool(report.verdict.notes)
        parts += [f"<p>{html.escape(LRA_CAPTION)}</p>", html_table(lra)]
    if report.figures:
        parts.append("<h2>Figures</h2>")
    for t, _, png in report.figures:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        t = html.escape(t)
        parts.append(f'<figure><figcaption>{t}</figcaption><img alt="{t}" src="{uri}"></figure>')
    if report.fusions.rows:
        parts += ["<h2>Fused operators</h2>", html_table(report.fusions)]
    parts += ["<h2>Protocol</h2>", html_table(report.protocol)]
    parts += ["<h2>All latency records</h2>", f"<details><summary>{len(report.latency.rows)} records</summary>",
              html_table(report.latency), "</details>", "</body></html>\n"]
    return "\n".join(parts)
