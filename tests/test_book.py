"""The book pipeline: book/build.py executes the chapters and builds the HTML.

One smoke-profile build per session, into the normal output paths (book/_executed/,
_build/html), then checks on what it produced. After these tests the built book is the
smoke-profile one; `make book` rebuilds it at the default profile.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import browser_check
import nbformat
import numpy as np
import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "book" / "build.py"
EXECUTED = ROOT / "book" / "_executed"
HTML = ROOT / "_build" / "html"
SOURCE_NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Sequential and parallel smoothers in float32: agreement well inside these.
AGREEMENT_TOL = {"mean": 1e-4, "cov": 1e-4, "cross_cov": 1e-4, "log_normalizer_relative": 1e-5}


def _load_build_module():
    spec = importlib.util.spec_from_file_location("book_build", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_module()
CHAPTERS = build.discover_chapters()


@pytest.fixture(scope="session")
def built_book():
    """Run `book/build.py --profile smoke` once; fail with its output if it fails. The timeout
    guards against a hang, not the suite's time budget: a slow shared machine may take twice
    the usual ~6 minutes."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--profile", "smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
    return {"stdout": proc.stdout, "seconds": time.perf_counter() - start}


class _ImgCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.scripts = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs.get("src"))
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])


def _parse(path: Path) -> _ImgCollector:
    parser = _ImgCollector()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _numbers(obj, path="results"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield path, obj


# ----------------------------------------------------------------------------- sources


def test_toc_lists_every_notebook():
    assert CHAPTERS, "no chapters found"
    assert sorted(CHAPTERS) == sorted(p.stem for p in SOURCE_NOTEBOOKS)


@pytest.mark.parametrize("path", SOURCE_NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebooks_are_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: need exactly one cell tagged 'parameters'"
    assert code[0] is tagged[0], f"{path.name}: the parameters cell must be the first code cell"
    for name in ("profile", "output_dir"):  # book/build.py injects these
        assert f"\n{name} = " in "\n" + tagged[0].source, f"{path.name}: no `{name} = ...`"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_chapter_hash_tracks_notebook_profile_and_library(tmp_path):
    nb = tmp_path / "c.ipynb"
    nb.write_text("{}")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "m.py").write_text("x = 1\n")
    base = build.chapter_hash(nb, "smoke", lib)
    assert build.chapter_hash(nb, "smoke", lib) == base
    assert build.chapter_hash(nb, "quick", lib) != base
    (lib / "m.py").write_text("x = 2\n")
    changed_lib = build.chapter_hash(nb, "smoke", lib)
    assert changed_lib != base
    nb.write_text('{"a": 1}')
    assert build.chapter_hash(nb, "smoke", lib) != changed_lib


def test_chapter_hash_tracks_the_results_a_chapter_declares(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (tmp_path / "results" / "params").mkdir(parents=True)
    (tmp_path / "results" / "r.json").write_text("1")
    (tmp_path / "results" / "other.json").write_text("1")
    nb = tmp_path / "c.ipynb"
    nb.write_text(json.dumps({"metadata": {"svae": {"results": ["results/r.json",
                                                                 "results/params/*.bin"]}}}))
    digest = lambda: build.chapter_hash(nb, "smoke", lib, root=tmp_path)
    base = digest()
    (tmp_path / "results" / "other.json").write_text("2")  # not declared: no effect
    assert digest() == base
    (tmp_path / "results" / "r.json").write_text("2")
    changed = digest()
    assert changed != base
    (tmp_path / "results" / "params" / "a.bin").write_bytes(b"x")  # a new file in a glob
    assert digest() != changed
    assert build.declared_results(nb, tmp_path) == [tmp_path / "results" / "params" / "a.bin",
                                                    tmp_path / "results" / "r.json"]


def test_every_declared_result_exists_and_every_chapter_ends_with_results_then_exercises():
    """A chapter's declared results are committed files, and its last two sections are
    "Results" and "Exercises"."""
    for path in SOURCE_NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for pattern in nb.metadata.get("svae", {}).get("results", []):
            assert list(ROOT.glob(pattern)), f"{path.name}: nothing matches {pattern}"
        headings = [line.strip() for c in nb.cells if c.cell_type == "markdown"
                    for line in c.source.splitlines() if line.startswith("## ")]
        assert headings[-2:] == ["## Results", "## Exercises"], (path.name, headings[-3:])


_EXERCISE = re.compile(r"^```\{exercise\}\n:label: ([\w-]+)", re.M)
_SOLUTION_START = re.compile(r"^```\{solution-start\} ([\w-]+)\n:class: dropdown\n```$")


def exercises_and_solutions(nb) -> list[tuple[str, str | None, int]]:
    """[(exercise label, label its solution answers, code cells in the solution)] in order:
    each exercise cell must be followed by a gated dropdown solution before the next one."""
    found = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        m = _EXERCISE.match(cell.source) if cell.cell_type == "markdown" else None
        if not m:
            continue
        start = _SOLUTION_START.match(cells[i + 1].source) if i + 1 < len(cells) else None
        code_cells, j = 0, i + 2
        while start and j < len(cells) and cells[j].source.strip() != "```{solution-end}\n```":
            code_cells += cells[j].cell_type == "code"
            j += 1
        found.append((m.group(1), start.group(1) if start else None,
                      code_cells if start and j < len(cells) else 0))
    return found


@pytest.mark.parametrize("path", SOURCE_NOTEBOOKS, ids=lambda p: p.stem)
def test_each_chapter_has_two_to_four_exercises_with_code_solutions(path):
    found = exercises_and_solutions(nbformat.read(path, as_version=4))
    assert 2 <= len(found) <= 4, (path.name, found)
    labels = [label for label, _, _ in found]
    assert len(set(labels)) == len(labels), f"{path.name}: repeated exercise labels {labels}"
    for label, answers, code_cells in found:
        assert answers == label, f"{path.name}: exercise {label} has no dropdown solution"
        assert code_cells >= 1, f"{path.name}: the solution to {label} runs no code"


def test_exercise_parser_catches_a_missing_or_codeless_solution():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        md("```{exercise}\n:label: a\n\nDo a.\n```"),
        md("```{solution-start} a\n:class: dropdown\n```"), code("1"), md("```{solution-end}\n```"),
        md("```{exercise}\n:label: b\n\nDo b.\n```"),
        md("```{solution-start} b\n:class: dropdown\n```"), md("words"),
        md("```{solution-end}\n```"),
        md("```{exercise}\n:label: c\n\nDo c.\n```"), code("2"),
    ])
    assert exercises_and_solutions(nb) == [("a", "a", 1), ("b", "b", 0), ("c", None, 0)]


# ----------------------------------------------------------------------------- the build


def test_build_reports_each_chapter(built_book):
    for name in CHAPTERS:
        assert name in built_book["stdout"]
    assert "html: done" in built_book["stdout"]


@pytest.mark.parametrize("name", CHAPTERS)
def test_executed_notebook_has_outputs_and_no_errors(built_book, name):
    nb = nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a code cell was not executed"
    outputs = [o for c in code for o in c.outputs]
    assert outputs, "no outputs at all"
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"error outputs: {[(o.ename, o.evalue) for o in errors]}"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure"
    injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'profile = "smoke"' in injected[0].source


def test_message_passing_results(built_book):
    results = json.loads((EXECUTED / "message_passing.json").read_text())
    assert results["profile"] == "smoke"
    assert results["device"]["platform"] and results["device"]["summary"]
    numbers = list(_numbers(results))
    assert len(numbers) > 10
    bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
    assert not bad, bad
    assert results["hidden_observation_leak"] == 0.0
    assert results["agreement"], "no sequential/parallel comparison"
    for row in results["agreement"]:
        for key, tol in AGREEMENT_TOL.items():
            assert row["max_abs"][key] < tol, (row["num_timesteps"], key, row["max_abs"][key])
    lz = results["log_normalizer"]
    assert abs(lz["sequential"] - lz["parallel"]) <= 1e-5 * abs(lz["parallel"]) + 1e-4
    # A sane posterior: coverage of the ±2 s.d. band where observed (80 steps x 2 coordinates).
    assert 0.8 <= results["coverage_2sd"]["observed"] <= 1.0
    assert results["rmse"]["observed"] < results["rmse"]["observations_alone"]


def test_lds_grid_results(built_book):
    results = json.loads((EXECUTED / "lds_grid.json").read_text())
    assert results["profile"] == "smoke" and results["device"]["summary"]
    assert results["grid"], "no grid cells"
    bad = [(p, v) for p, v in _numbers(results) if not math.isfinite(v)]
    assert not bad, bad
    for c in results["grid"] + results["masking"]["masked"]:
        # an ELBO above the exact log-likelihood would be a bug (MC error allowed)
        assert c["test_elbo"] <= c["true_mll"] + 4e-3, c
        gap = (c["test_elbo"] - c["null_ll"]) / (c["true_mll"] - c["null_ll"])
        assert c["gap_fraction"] == pytest.approx(gap, rel=1e-6), c
    assert results["masking"]["config"]["mask_fraction"] > 0
    assert {c["model"] for c in results["masking"]["masked"]} <= {
        c["model"] for c in results["masking"]["unmasked"]}
    assert set(results["paper_table1"]) == {"D32_N64_q0.1_r1", "D64_N128_q0.1_r1"}


def test_timing_results(built_book):
    results = json.loads((EXECUTED / "timing.json").read_text())
    assert results["profile"] == "smoke" and results["device"]["summary"]
    rows = results["train_step"]
    lengths = sorted({r["num_timesteps"] for r in rows})
    labels = sorted({r["label"] for r in rows})
    assert len(lengths) >= 2 and len(rows) == len(lengths) * len(labels)
    assert all(r["median_s"] > 0 and r["compile_s"] > 0 for r in rows)
    paths = {r["path"] for r in results["smoother"]}
    assert any(p.startswith("ours") for p in paths) and any(p.startswith("dynamax") for p in paths)
    assert all(r["fwd_ms"] > 0 and r["vg_ms"] > 0 for r in results["smoother"])


def test_pendulum_results(built_book):
    results = json.loads((EXECUTED / "pendulum.json").read_text())
    assert results["profile"] == "smoke" and results["device"]["summary"]
    report = json.loads((ROOT / "benchmarks" / "results" / "pendulum.json").read_text())
    # the chapter's headline numbers are the committed report-scale run's kept seeds
    for cell in report["masked"]:
        row = results["results"][cell["model"]][str(cell["latent_dim"])]
        for key in ("r2_theta", "r2_velocity", "predictive_ll", "test_elbo"):
            assert row[key] == cell[key], (cell["model"], cell["latent_dim"], key)
    assert results["report"]["runs"] == report["runs"]
    # the saved models it loaded decode as the report says they do
    for model, loaded in results["loaded_models"].items():
        row = results["results"][model]["3"]
        assert loaded["seed"] == row["seed"]
        assert abs(loaded["r2_velocity"] - row["r2_velocity"]) < 2e-3, model
    # every saved model at quick and full; at smoke (CI time) the SVAE's alone
    assert "svae" in results["loaded_models"]
    assert set(results["loaded_models"]) <= set(results["results"])
    assert {c["claim"] for c in results["claims"]} and all(
        isinstance(c["reproduced"], bool) for c in results["claims"])
    rerun = results["rerun"]["results"]
    assert rerun and all(math.isfinite(v) for by_d in rerun.values() for row in by_d.values()
                         for v in row.values())


def check_optimizer_race(results):
    """One entry per (optimiser, step size, seed) of the settings; halted runs say when."""
    settings = results["settings"]
    runs = results["optimizers"]
    assert len(runs) == sum(len(v) for v in settings["step_sizes"].values()) * len(
        settings["seeds"])
    for r in runs:
        assert (r["halted_at_step"] is None) == (not r["left_domain"]), r
        assert math.isfinite(r["final_elbo"]) and math.isfinite(r["heldout_elbo"]), r
    assert {c["claim"] for c in results["claims"]} and all(
        isinstance(c["reproduced"], bool) for c in results["claims"])


def test_spiral_gmm_results(built_book):
    results = json.loads((EXECUTED / "spiral_gmm.json").read_text())
    assert results["profile"] == "smoke" and results["device"]["summary"]
    assert set(results["results"]) == {"gmm", "vae", "gmm_svae"}
    for method, row in results["results"].items():
        assert math.isfinite(row["heldout_elbo"]) and -1 <= row["ari"] <= 1, method
        # the reported row is the kept seed: the best final training ELBO of its seeds
        assert row["final_elbo"] == max(s["final_elbo"] for s in row["per_seed"]), method
    check_optimizer_race(results)


def test_bouncing_dot_results(built_book):
    results = json.loads((EXECUTED / "bouncing_dot.json").read_text())
    assert results["profile"] == "smoke" and results["device"]["summary"]
    # position R² and prediction error of the kept natural-gradient run, in image units
    assert results["r2_position"] <= 1 and 0 <= results["prediction_error"] <= 2
    assert results["kept"]["optimizer"] == "natgrad"
    check_optimizer_race(results)


def test_mouse_slds_results(built_book):
    results = json.loads((EXECUTED / "mouse_slds.json").read_text())
    assert results["profile"] == "smoke" and results["device"]["summary"]
    K = results["settings"]["num_states"]
    assert set(results["results"]) >= {"slds_svae", "arhmm_pca", "kmeans_lds_svae"}
    for method, row in results["results"].items():
        assert -1e-9 <= row["nmi"] <= 1 + 1e-9 and -1 <= row["ari"] <= 1, method
        assert 1 <= row["states_used"] <= K, method
        # the reported score is the median over seeds
        assert row["nmi"] == pytest.approx(np.median([p["nmi"] for p in row["per_seed"]]))
    assert results["run"]["steps"] == results["settings"]["steps"]
    assert all(isinstance(c["reproduced"], bool) for c in results["claims"])


def test_real_data_results(built_book):
    results = json.loads((EXECUTED / "real_data.json").read_text())
    assert results["profile"] == "smoke" and results["device"]["summary"]
    for r in results["rows"]:
        assert np.isfinite(r["test"]) and np.isfinite(r["predictive_ll"]), r
        assert r["vs_linear"] == pytest.approx(
            r["test"] - results["results"][r["data"]][str(r["D"])]["linear_ssm"]["test"])
    for name, data in results["data"].items():
        # the forecast window: held-out sequences observed for num_observed + horizon steps
        assert len(data["forecast_index"]) >= 1, name
    assert all(isinstance(c["reproduced"], bool)
               for c in results["claims"] + results["report_claims"])


def test_html_pages_exist(built_book):
    assert (HTML / "index.html").exists()
    assert (HTML / "intro.html").exists()
    for name in CHAPTERS:
        assert (HTML / "_executed" / f"{name}.html").exists(), name


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_page_images_exist_on_disk(built_book, name):
    page = HTML / "_executed" / f"{name}.html"
    srcs = _parse(page).imgs
    assert srcs, f"{page.name} has no <img>"
    for src in srcs:
        assert src and not src.startswith(("http:", "https:", "data:")), src
        assert (page.parent / src).resolve().is_file(), f"{src} missing on disk"


def test_markdown_tables_in_outputs_render_as_tables(built_book):
    """Chapters print tables as Markdown outputs; CommonMark would leave them as raw text."""
    page = (HTML / "_executed" / "message_passing.html").read_text(encoding="utf-8")
    assert page.count("<table") >= 2
    assert "<p>| T |" not in page


def test_pages_load_mathjax_locally_once(built_book):
    for page in [HTML / "intro.html"] + [HTML / "_executed" / f"{n}.html" for n in CHAPTERS]:
        scripts = _parse(page).scripts
        mathjax = [s for s in scripts if "mathjax" in s.lower() or "tex-svg" in s]
        assert len(mathjax) == 1, (page.name, mathjax)
        assert (page.parent / mathjax[0].split("?")[0]).is_file()
        remote = [s for s in scripts if s.startswith(("http:", "https:", "//"))]
        assert not remote, (page.name, remote)


def test_sphinx_log_has_no_warnings(built_book):
    log = (ROOT / "_build" / "sphinx-build.log").read_text()
    assert "WARNING" not in log and "ERROR" not in log


def test_second_run_skips_unchanged_chapter(built_book):
    name = CHAPTERS[0]
    proc = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--profile", "smoke", "--only", name, "--no-html"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout and "executing" not in proc.stdout, proc.stdout


def test_unknown_chapter_is_rejected():
    proc = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--only", "no_such_chapter", "--no-html"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no_such_chapter" in proc.stdout


def test_failing_chapter_fails_loudly_naming_chapter_and_cell(tmp_path, monkeypatch, capsys):
    notebooks, executed = tmp_path / "notebooks", tmp_path / "_executed"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"\noutput_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise RuntimeError('deliberate failure in ' + profile)"),
        nbformat.v4.new_code_cell("never = True"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, notebooks / "broken.ipynb")
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nchapters:\n  - file: _executed/broken\n")
    monkeypatch.setattr(build, "NOTEBOOKS", notebooks)
    monkeypatch.setattr(build, "TOC", toc)
    monkeypatch.setattr(build, "EXECUTED", executed)

    assert build.main(["--profile", "smoke", "--no-html"]) == 1
    err = capsys.readouterr().err
    assert "chapter 'broken' failed in cell 3" in err, err  # index 1 is papermill's injected cell
    assert "RuntimeError: deliberate failure in smoke" in err, err
    assert not (executed / "broken.hash").exists()  # a failed chapter is never marked done


# ----------------------------------------------------------------------------- in a browser

CHROMIUM = browser_check.ensure_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium and it could not be installed (apt-get, root)")


@needs_chromium
def test_browser_check_catches_js_errors_and_broken_images(tmp_path):
    """The checker itself can fail: a page with a script error and a missing image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="missing.png"><script>notDefined();</script>'
                   "</body></html>")
    good = tmp_path / "good.html"
    good.write_text("<html><body><p>fine</p></body></html>")
    reports = browser_check.check_pages([bad.as_uri(), good.as_uri()], CHROMIUM)
    problems = " | ".join(reports[bad.as_uri()].problems)
    assert "notDefined" in problems and "broken image: missing.png" in problems, problems
    assert reports[good.as_uri()].problems == []


@needs_chromium
def test_book_loads_in_chromium_without_errors(built_book):
    """The index (a redirect to the intro) and every chapter, as a reader's browser sees them;
    on each chapter every exercise's solution is folded, with its executed output hidden
    until a click on its title shows it."""
    pages = [HTML / "index.html"] + [HTML / "_executed" / f"{n}.html" for n in CHAPTERS]
    reports = browser_check.check_pages([p.as_uri() for p in pages], CHROMIUM,
                                        evaluate=browser_check.OPEN_SOLUTIONS_JS)
    for page in pages:
        report = reports[page.as_uri()]
        assert report.problems == [], (page.name, report.problems)
    assert reports[pages[0].as_uri()].final_url.endswith("intro.html")
    for name, page in zip(CHAPTERS, pages[1:], strict=True):
        solutions = reports[page.as_uri()].value
        exercises = exercises_and_solutions(nbformat.read(ROOT / "notebooks" / f"{name}.ipynb",
                                                          as_version=4))
        assert len(solutions) == len(exercises), (name, solutions)
        for sol in solutions:
            assert sol["has_output"] and sol["hidden_before"] and sol["shown_after"], (name, sol)
