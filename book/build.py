"""Execute the book's chapters with papermill, then build the HTML with Jupyter Book 1.x.

Usage (from anywhere; paths are resolved from this file)::

    .venv/bin/python book/build.py --profile smoke|quick|full [--only NAME] [--force] [--no-html]

Chapters are the notebooks ``notebooks/<name>.ipynb``; each must be listed in ``book/_toc.yml``
as ``_executed/<name>`` and vice versa. Each is executed with the parameters ``profile`` and
``output_dir`` into ``book/_executed/<name>.ipynb`` (the chapter writes
``book/_executed/<name>.json`` there too). A chapter is skipped when its notebook, the
profile, the ``svae_core`` sources, the JAX/Python versions and the committed result files it
declares (notebook metadata ``svae.results``: globs under the repository root) all hash the
same as at its last successful run (``book/_executed/<name>.hash``); ``--force`` re-executes
anyway.

Then a fresh ``jupyter-book build`` runs on ``book/`` with the top-level ``_config.yml`` and
``book/_toc.yml``, with warnings as errors, writing ``_build/html`` at the repository root and
the full log to ``_build/sphinx-build.log``. Nothing here needs the network.

Exit status: 0 on success; 1 when a chapter fails (the message names the chapter and the
cell), or the HTML build fails or warns; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = BOOK / "_executed"
LIBRARY = ROOT / "svae_core"
CONFIG = ROOT / "_config.yml"
TOC = BOOK / "_toc.yml"
BUILD = ROOT / "_build"
HTML = BUILD / "html"
LOG = BUILD / "sphinx-build.log"
PROFILES = ("smoke", "quick", "full")
KERNEL = "python3"
TOC_PREFIX = "_executed/"


class BuildError(Exception):
    """A failure to report in one message, without a traceback."""


class ChapterFailed(BuildError):
    """A chapter's notebook raised; carries where, so the message can name the cell."""

    def __init__(self, name, cell_index, exec_count, ename, evalue, source, executed_path):
        self.name, self.cell_index, self.exec_count = name, cell_index, exec_count
        self.ename, self.evalue, self.source = ename, evalue, source
        self.executed_path = executed_path
        super().__init__(self.describe())

    def describe(self) -> str:
        head = "\n".join("    " + line for line in (self.source or "").splitlines()[:8])
        return (
            f"chapter {self.name!r} failed in cell {self.cell_index} "
            f"(execution count {self.exec_count}): {self.ename}: {self.evalue}\n"
            f"  cell source begins:\n{head}\n"
            f"  the partly executed notebook, with the traceback, is {self.executed_path}"
        )


# ----------------------------------------------------------------------------- chapters


def _rel(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry of the table of contents, in order (root first)."""
    import yaml  # shipped with jupyter-book

    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def discover_chapters(notebooks_dir: Path | None = None, toc_path: Path | None = None) -> list[str]:
    """Chapter names in table-of-contents order; the notebooks and the TOC must agree."""
    notebooks_dir = NOTEBOOKS if notebooks_dir is None else notebooks_dir
    toc_path = TOC if toc_path is None else toc_path
    on_disk = {p.stem for p in notebooks_dir.glob("*.ipynb")}
    in_toc = [
        re.sub(r"\.ipynb$", "", f)[len(TOC_PREFIX) :]
        for f in _toc_files(toc_path)
        if f.startswith(TOC_PREFIX)
    ]
    missing_nb = [n for n in in_toc if n not in on_disk]
    missing_toc = sorted(on_disk - set(in_toc))
    if missing_nb or missing_toc:
        hint = f"add '{TOC_PREFIX}<name>'"
        raise BuildError(
            f"{_rel(toc_path)} and {_rel(notebooks_dir)}/ disagree: "
            + (f"listed but no notebook: {missing_nb}. " if missing_nb else "")
            + (f"notebooks not in the TOC ({hint}): {missing_toc}." if missing_toc else "")
        )
    return in_toc


def declared_results(source: Path, root: Path | None = None) -> list[Path]:
    """The committed result files a chapter reads: the globs (relative to the repository
    root) listed in its notebook's metadata under ``svae.results``, expanded and sorted."""
    root = ROOT if root is None else root
    try:
        metadata = json.loads(source.read_text(encoding="utf-8")).get("metadata", {})
    except ValueError:
        return []
    patterns = metadata.get("svae", {}).get("results", [])
    return sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})


def chapter_hash(source: Path, profile: str, library: Path | None = None,
                 root: Path | None = None) -> str:
    """sha256 over the notebook, the profile, every svae_core source file, the versions and
    the result files the chapter declares (:func:`declared_results`), so a new committed
    result re-executes the chapter that renders it."""
    import jax

    library = LIBRARY if library is None else library
    root = ROOT if root is None else root
    digest = hashlib.sha256()

    def add(label: str, data: bytes):
        digest.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    add("notebook", source.read_bytes())
    add("profile", profile.encode())
    add("versions", f"{platform.python_version()} jax {jax.__version__}".encode())
    for path in sorted(library.rglob("*.py")):
        add(str(path.relative_to(library)), path.read_bytes())
    for path in declared_results(source, root):
        add("result " + str(path.relative_to(root)), path.read_bytes())
    return digest.hexdigest()


def _stamp_path(name: str, executed_dir: Path) -> Path:
    return executed_dir / f"{name}.hash"


def is_up_to_date(name: str, digest: str, executed_dir: Path) -> bool:
    stamp = _stamp_path(name, executed_dir)
    if not (stamp.exists() and (executed_dir / f"{name}.ipynb").exists()):
        return False
    try:
        return json.loads(stamp.read_text())["hash"] == digest
    except (ValueError, KeyError):
        return False


def execute_chapter(
    name: str, source: Path, profile: str, executed_dir: Path, progress_bar: bool = False
) -> float:
    """Run one chapter with papermill into ``executed_dir/<name>.ipynb``; seconds taken.

    The kernel's working directory is the repository root, and ``output_dir`` is passed
    relative to it when possible (so the executed page does not show a machine's paths).

    Raises:
        ChapterFailed: when a cell raises (the executed notebook is kept for inspection).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed_dir.mkdir(parents=True, exist_ok=True)
    target = executed_dir / f"{name}.ipynb"
    _stamp_path(name, executed_dir).unlink(missing_ok=True)
    output_dir = _rel(executed_dir)
    env_before = os.environ.get("SVAE_OUTPUT_DIR")
    os.environ["SVAE_OUTPUT_DIR"] = str(executed_dir.resolve())
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters={"profile": profile, "output_dir": output_dir},
            kernel_name=KERNEL,
            cwd=str(ROOT),
            progress_bar=progress_bar,
            log_output=False,
        )
    except PapermillExecutionError as err:
        raise ChapterFailed(
            name, err.cell_index, err.exec_count, err.ename, err.evalue, err.source, target
        ) from None
    except Exception as err:  # dead kernel, timeout, unreadable notebook, ...
        raise BuildError(
            f"chapter {name!r} could not be executed: {type(err).__name__}: {err}\n"
            f"  the partly executed notebook (if any) is {target}"
        ) from err
    finally:
        if env_before is None:
            os.environ.pop("SVAE_OUTPUT_DIR", None)
        else:
            os.environ["SVAE_OUTPUT_DIR"] = env_before
    return time.perf_counter() - start


def write_stamp(name: str, digest: str, profile: str, seconds: float, executed_dir: Path):
    _stamp_path(name, executed_dir).write_text(
        json.dumps(
            {
                "hash": digest,
                "profile": profile,
                "seconds": round(seconds, 1),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
        + "\n"
    )


# ----------------------------------------------------------------------------- HTML


def _jupyter_book_command() -> list[str]:
    script = Path(sys.executable).with_name("jupyter-book")
    if script.exists():
        return [str(script)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    return [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]


def build_html() -> float:
    """A fresh ``jupyter-book build`` with warnings as errors; seconds taken.

    The previous HTML and doctrees are removed first, so every page is re-read (and every
    warning re-reported) and no page or image of a removed chapter survives; without
    notebook execution this takes seconds.

    Raises:
        BuildError: on a non-zero exit or any WARNING/ERROR line in the log.
    """
    for stale in (HTML, BUILD / ".doctrees", BUILD / "jupyter_execute"):
        shutil.rmtree(stale, ignore_errors=True)
    BUILD.mkdir(exist_ok=True)
    cmd = _jupyter_book_command() + [
        "build",
        str(BOOK),
        "--config",
        str(CONFIG),
        "--toc",
        str(TOC),
        "--path-output",
        str(ROOT),
        "--warningiserror",
        "--keep-going",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    seconds = time.perf_counter() - start
    LOG.write_text(proc.stdout)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    problems = [line for line in plain.splitlines() if re.search(r"WARNING|ERROR", line)]
    if proc.returncode != 0 or problems:
        shown = "\n".join(problems[-20:]) or "\n".join(plain.splitlines()[-30:])
        raise BuildError(
            f"the HTML build failed (exit {proc.returncode}, {len(problems)} warning/error "
            f"lines; full log: {_rel(LOG)}):\n{shown}"
        )
    return seconds


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILES, default="quick", help="default: quick")
    parser.add_argument("--only", metavar="NAME", help="execute only this chapter")
    parser.add_argument("--force", action="store_true", help="re-execute even if up to date")
    parser.add_argument("--no-html", action="store_true", help="execute only; skip the HTML")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    total_start = time.perf_counter()
    try:
        chapters = discover_chapters()
        if args.only is not None and args.only not in chapters:
            print(f"error: no chapter {args.only!r}; chapters: {', '.join(chapters)}")
            return 2
        selected = [args.only] if args.only else chapters
        # The HTML needs every chapter's executed copy; run the missing ones too.
        extra = [
            n
            for n in chapters
            if n not in selected and not (EXECUTED / f"{n}.ipynb").exists() and not args.no_html
        ]
        todo = selected + extra
        print(f"book: profile {args.profile}, {len(todo)} chapter(s) to check: {', '.join(todo)}")
        for i, name in enumerate(todo, 1):
            source = NOTEBOOKS / f"{name}.ipynb"
            digest = chapter_hash(source, args.profile)
            tag = f"[{i}/{len(todo)}] {name}"
            if name in extra:
                tag += " (no executed copy yet; the HTML needs one)"
            if not args.force and is_up_to_date(name, digest, EXECUTED):
                print(f"{tag}: up to date for profile {args.profile}, skipped", flush=True)
                continue
            print(f"{tag}: executing with profile {args.profile} ...", flush=True)
            seconds = execute_chapter(
                name, source, args.profile, EXECUTED, progress_bar=sys.stderr.isatty()
            )
            write_stamp(name, digest, args.profile, seconds, EXECUTED)
            print(f"{tag}: done in {seconds:.1f} s -> {_rel(EXECUTED)}/{name}.ipynb", flush=True)
        if not args.no_html:
            print("html: jupyter-book build ...", flush=True)
            seconds = build_html()
            print(f"html: done in {seconds:.1f} s -> {_rel(HTML)}/index.html")
    except ChapterFailed as err:
        print(f"\nFAILED: {err.describe()}", file=sys.stderr)
        return 1
    except BuildError as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1
    print(f"book: finished in {time.perf_counter() - total_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
