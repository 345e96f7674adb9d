"""eval.report: results.json in, self-contained HTML and readable Markdown out."""

import base64
import json
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compress.errors import SlimformerError
from eval import load_results, write_report
from eval.plots import pareto_front

SCHEMA = Path(__file__).resolve().parents[2] / "eval" / "results_schema.json"
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}


class Collector(HTMLParser):
    """Records every tag, link, image source, code span, table and text cell, and checks that tags nest properly."""

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []  # every src/href/srcset/action value, images included
        self.codes: list[str] = []
        self.cells: list[str] = []
        self.tables: list[list[list[str]]] = []  # table -> row -> cell text, header row first
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.images += [value for name, value in attrs if tag == "img" and name == "src"]
        self.links += [value or "" for name, value in attrs if name in ("src", "href", "srcset", "action")]
        self.in_cell = tag in ("td", "th")
        if self.in_cell:
            self.cells.append("")
            self.tables[-1][-1].append("")
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag == "code":
            self.codes.append("")
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()
        self.in_cell = False

    def handle_data(self, data):
        if self.in_cell:
            self.cells[-1] += data
            self.tables[-1][-1][-1] += data
        if self.open and self.open[-1] == "code":
            self.codes[-1] += data

    def table(self, first_header: str, header: str) -> list[dict[str, str]]:
        """The rows, as header -> cell, of the one table whose headers start with `first_header` and include `header`."""
        found = [t for t in self.tables if t and t[0][:1] == [first_header] and header in t[0]]
        assert len(found) == 1, f"{len(found)} tables with headers {first_header!r} and {header!r}"
        return [dict(zip(found[0][0], row, strict=True)) for row in found[0][1:]]


def parse(path: Path) -> Collector:
    collector = Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    collector.close()
    assert collector.open == []
    return collector


def test_single_run_writes_self_contained_html_and_markdown(make_run: Callable[..., Path]):
    run_dir = make_run()
    paths = write_report([run_dir])
    assert paths["md"] == run_dir / "report.md" and paths["html"] == run_dir / "report.html"
    page = parse(paths["html"])
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not {"script", "link", "iframe"} & set(page.tags)  # no JS, no external CSS
    assert "http" not in "".join(page.images)
    # accuracies with Wilson 95% intervals from n_test = 2000 (1420/2000, 1385/2000); Δ with the recorded paired interval
    assert {"teacher", "student", "69.25 [67.19, 71.23]", "-1.75 [-3.00, -0.50]", "4.00×"} <= set(page.cells)
    html_text = paths["html"].read_text()
    assert '<td class="best">71.00 [68.97, 72.95]</td>' in html_text and '<td class="best">2.50</td>' in html_text
    assert "2000 test texts, so one point is 20 texts" in html_text
    assert "<details>" in html_text and "hypernym &lt;b&gt;" in html_text
    assert "std/mean" in html_text  # the student's spread is 1.0 / 2.5 = 0.4
    markdown = paths["md"].read_text()
    assert "| teacher | train | — | **71.00 [68.97, 72.95]** | +0.00 |" in markdown
    assert "| student | distill | teacher | 69.25 [67.19, 71.23] | -1.75 [-3.00, -0.50] |" in markdown
    figures = sorted(p.name for p in paths["files"].iterdir())
    assert figures == ["accuracy_vs_latency.png", "accuracy_vs_size.png", "latency_vs_batch.png", "training_curves.png"]
    assert all(f"report_files/{name}" in markdown for name in figures)


def test_latency_vs_length_figure_when_stages_have_two_lengths(make_run: Callable[..., Path], make_results, make_latency):
    results = make_results()
    for stage, base in zip(results["stages"], (10.0, 2.5), strict=True):
        stage["latency"] += [make_latency(8, base * 4, seq_len=256)]
    paths = write_report([make_run(results=results)])
    assert "latency_vs_length.png" in {p.name for p in paths["files"].iterdir()}
    assert "Latency vs sequence length" in paths["html"].read_text()


def compact_count(n: int) -> str:
    """The report's Params form, written out again here so the test does not reuse the code it checks."""
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}K" if n >= 1e3 else str(n)


def test_html_holds_every_stage_number_the_reproduce_command_and_only_embedded_figures(make_run, make_results, make_latency):
    """The page a user opens: parses, figures inline, no external fetch, the exact command, results.json's numbers."""
    results = make_results("tiny")
    results["command"] = """slimformer run 'my recipe.yaml' name=a&b task.text_column="<t>" steps.teacher.epochs=1"""
    results["stages"].append({"name": "int8", "kind": "quantize", "parent": "student", "accuracy": 0.6899, "params": 999,
                              "onnx_bytes": 400_000, "latency": [make_latency(8, 1.25), make_latency(1, 0.3)]})
    paths = write_report([make_run("tiny", results)])
    page = parse(paths["html"])
    html_text = paths["html"].read_text(encoding="utf-8")

    assert page.codes.count(results["command"]) == 1  # exact, after unescaping &, < and quotes
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n") for src in page.images)
    external = [link for link in page.links if not link.startswith(("data:", "#"))]
    assert external == [] and not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert "url(" not in html_text and "@import" not in html_text  # nothing fetched from CSS either

    summary = {row["Stage"]: row for row in page.table("Stage", "Accuracy % (ONNX)")}
    records = page.table("Stage", "p50_ms")
    assert list(summary) == [stage["name"] for stage in results["stages"]]
    for stage in results["stages"]:
        row = summary[stage["name"]]
        assert row["Accuracy % (ONNX)"].split(" [")[0] == f"{100 * stage['accuracy']:.2f}"
        assert row["Params"].split(" ")[0] == compact_count(stage["params"])
        assert row["ONNX MB"].split(" ")[0] == f"{stage['onnx_bytes'] / 1e6:.2f}"
        headline = [r for r in stage["latency"] if (r["runtime"], r["batch"], r["seq_len"]) == ("onnxruntime", 8, 64)]
        assert row["p50 ms"] == f"{headline[0]['p50_ms']:.2f}" and row["p99 ms"] == f"{headline[0]['p99_ms']:.2f}"
        listed = [(r["batch"], r["runtime"], r["p50_ms"]) for r in records if r["Stage"] == stage["name"]]
        assert listed == [(str(r["batch"]), r["runtime"], f"{r['p50_ms']:.3f}") for r in stage["latency"]]


def test_stage_with_only_name_and_kind_and_html_in_names(make_run: Callable[..., Path], make_results):
    results = make_results()
    results["stages"].append({"name": "<script>alert(1)</script>", "kind": "quantize"})
    results["stages"][0]["train_curve"] = None
    paths = write_report([make_run(results=results)])
    html_text = paths["html"].read_text()
    assert "<script>" not in html_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "<script>" not in paths["md"].read_text()
    cells = parse(paths["html"]).cells
    assert "<script>alert(1)</script>" in cells  # the parsed text is the name itself
    assert not (paths["files"] / "training_curves.png").exists()


def test_results_without_latency_still_report(make_run: Callable[..., Path], fast_figures):
    results = {"schema_version": 1, "stages": [{"name": "a", "kind": "train", "accuracy": 0.5},
                                                {"name": "b", "kind": "prune_heads", "accuracy": None}]}
    paths = write_report([make_run("bare", results)])
    page = parse(paths["html"])
    assert {"a", "b", "50.00"} <= set(page.cells)
    assert page.images == []


def test_compare_two_runs(make_run: Callable[..., Path], make_results, fast_figures):
    other = make_results("tiny")
    other["stages"][0]["accuracy"] = 0.75
    first, second = make_run("quickstart"), make_run("tiny", other)
    paths = write_report([first, second])
    assert paths["html"].parent == first.parent / "compare-quickstart-tiny"
    cells = set(parse(paths["html"]).cells)
    # another run's test texts: Newcombe's unpaired interval of 1500/2000 - 1420/2000, holding no zero
    assert {"quickstart/teacher", "quickstart/student", "tiny/teacher", "tiny/student", "+4.00 [+1.25, +6.74] unpaired"} <= cells
    assert "-1.75 [-3.00, -0.50]" in cells  # quickstart/student against its own run's baseline: the recorded paired interval
    rebased = write_report([first, second], out_dir=first.parent / "cmp", baseline="tiny/teacher")
    rebased_cells = set(parse(rebased["html"]).cells)
    assert "-4.00 [-6.74, -1.25] unpaired" in rebased_cells
    rows = {r["Stage"]: r["Δ pts"] for r in parse(rebased["html"]).table("Stage", "Δ pts")}
    assert rows["tiny/teacher"] == "+0.00" and rows["quickstart/student"].endswith(" unpaired")
    # tiny/student's recorded paired interval is of -1.75 points, but its teacher was edited to 75%: stale, not shown
    assert rows["tiny/student"].startswith("-5.75 [") and rows["tiny/student"].endswith(" unpaired")
    assert "against tiny/teacher" in rebased["md"].read_text()


def test_compare_warns_when_protocols_differ(make_run: Callable[..., Path], make_results, fast_figures):
    other = make_results("long")
    other["protocol"]["seq_len"] = 256
    paths = write_report([make_run("quickstart"), make_run("long", other)])
    assert "different protocols (seq_len)" in paths["md"].read_text()


def test_unknown_baseline_is_an_error(make_run: Callable[..., Path], fast_figures):
    with pytest.raises(SlimformerError, match="nope.*teacher"):
        write_report([make_run()], baseline="nope")


def test_missing_results_names_the_path(tmp_path: Path):
    with pytest.raises(SlimformerError, match=str(tmp_path / "results.json")):
        load_results(tmp_path)
    with pytest.raises(SlimformerError, match="results.json"):
        write_report([tmp_path])


def test_corrupt_or_misshapen_results_name_the_path(tmp_path: Path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(SlimformerError, match=f"{path}.*not valid JSON"):
        load_results(tmp_path)
    path.write_text(json.dumps({"schema_version": 1, "stages": [{"name": "a"}]}))
    with pytest.raises(SlimformerError, match=f"{path}.*lacks kind"):
        load_results(tmp_path)


def test_fixture_matches_schema(make_results):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(make_results())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({"schema_version": 1, "stages": [{"name": "a"}]})


@pytest.mark.parametrize(
    ("costs", "gains", "front"),
    [
        ([1, 2, 3], [1, 2, 3], [0, 1, 2]),  # each costlier point is better
        ([1, 2, 3], [3, 2, 1], [0]),  # the cheapest dominates
        ([2, 1, 3, 3], [5, 4, 5, 6], [1, 0, 3]),  # a tie in gain at higher cost is dominated
    ],
)
def test_pareto_front(costs, gains, front):
    assert pareto_front(costs, gains) == front


def test_parity_warning_names_every_row_that_breaks_the_gate(make_run: Callable[..., Path], make_results, fast_figures):
    """Quiet timings (no noisy-timing warning), and two rows above their parity gate: both are named."""
    results = make_results()
    results["stages"][1]["latency"] = [r | {"std_ms": 0.01} for r in results["stages"][1]["latency"]]
    results["stages"][0]["parity"] = {"max_abs_diff": 0.5, "atol": 1e-4, "n": 64}
    results["stages"][1]["parity"] = {"max_abs_diff": 0.2, "atol": 1e-4, "n": 64}
    text = write_report([make_run(results=results)])["md"].read_text()
    assert "latency spread" not in text
    assert "teacher: ONNX output differs from torch by 0.5" in text and "student: ONNX output differs from torch by 0.2" in text


def test_markdown_keeps_angle_brackets_readable():
    from eval.render import md_escape

    assert md_escape("re-time with `slimformer bench <run folder>`") == "re-time with `slimformer bench <run folder>`"
    assert md_escape("a <b> | c") == "a &lt;b> \\| c"


def test_fused_operators_and_timing_settings_are_reported(make_run: Callable[..., Path], make_results, fast_figures):
    results = make_results()
    results["stages"][0]["fusions"] = {"BiasGelu": 2, "MultiHeadAttention": 2, "SkipLayerNormalization": 4}
    results["stages"][1]["fusions"] = {}
    results["protocol"]["timing"] = {"onnxruntime": {"session.intra_op.allow_spinning": "0"}, "torch": {"threads": 2},
                                     "timed_call": "one forward pass"}
    paths = write_report([make_run(results=results)])
    md, page = paths["md"].read_text(), paths["html"].read_text()
    name0, name1 = results["stages"][0]["name"], results["stages"][1]["name"]
    assert f"| {name0} | BiasGelu ×2, MultiHeadAttention ×2, SkipLayerNormalization ×4 |" in md
    assert f"| {name1} | none (unfused graph) |" in md
    assert "Fused operators" in page and "MultiHeadAttention ×2" in page
    assert "session.intra_op.allow_spinning 0" in md  # the protocol's timing settings
