"""The book: run chapters with papermill, then build with jupyter-book, offline.

Two places hold executed chapters. `book/<model>/` is the **published** book, tracked in git and written
only by an explicit publish (`python -m emolib book --publish`, `make publish SCALE=full`). Every other
run, `make book` included, writes to its own folder, `runs/book/<scale>/<model>/` (git-ignored), and the
build adds it to the HTML as a part "Your run" beside the published book, with a page that sets each of
its headline numbers beside the published one (`emolib.book.compare.run_beside_published`). The published
`_toc.yml` is rewritten only on publish; a build with runs uses a generated copy in `_build/`.

A chapter is written to a temporary file and renamed into place only when it ran to the end, so a
failed or killed run never replaces a good chapter. The build never executes a notebook itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import EmolibError
from ..extraction import stages
from ..extraction.publish import publish_vectors, published_vectors_dir
from ..io import atomic_write_bytes, atomic_write_json, file_sha256, progress_disabled, project_root  # noqa: F401 (file_sha256: for chapters)
from ..models.profiles import DTYPES, get_profile
from ..stories.corpus import DEEP, default_corpus
from ..stories.design import SCALES
from ..stories.prompts import STORY_PROMPTS
from .compare import findings_markdown
from .parameters import declared as chapter_parameters
from .results import ModelResults, load
from .results import check as check_results
from .timings import record

from .parameters import CHAPTERS  # noqa: E402 (the chapters, in order)
MODEL_TITLES = {
    "270m": "Gemma 3 270M (embedded)",
    "smollm2": "SmolLM2 135M (embedded)",
    "e4b": "Gemma 4 E4B",
    "31b": "Gemma 4 31B (4-bit)",
}
ACROSS = ("comparison", "appendix")  # book-level chapters, run after the models' chapters into book/
YOUR_RUN = "your_run"  # a reader's run beside the published book (runs/book/<scale>/your_run.ipynb)
DEFAULT_SCALE = "quick"  # the chapters' default `scale` parameter
EMBEDDED = ("270m", "smollm2")  # the analysed models `make book` runs here
HIDDEN_TAGS = {"parameters": "remove-cell", "injected-parameters": "remove-cell"}


def run_scale(parameters: dict[str, Any] | None) -> str:
    return str((parameters or {}).get("scale") or DEFAULT_SCALE)


RUNS_BOOK = Path("runs", "book")  # readers' runs, under the project root (git-ignored)


def run_folder(root: Path, scale: str) -> Path:
    """Where a reader's run of one scale keeps its executed chapters: runs/book/<scale>/ (git-ignored)."""
    return root / RUNS_BOOK / scale


def run_chapters(model: str, chapters: list[str] | tuple[str, ...] = CHAPTERS, parameters: dict[str, Any] | None = None,
                 root: Path | None = None, out_dir: Path | None = None, log=print, check: bool = True,
                 publish: bool = False) -> dict[str, float]:
    """Execute `notebooks/<chapter>.ipynb` for `model` into `runs/book/<scale>/<model>/`, or into the
    published `book/<model>/` with `publish`, or into `out_dir`."""

    folder_name = get_profile(model).name  # a checkpoint path runs into runs/book/<scale>/<its name>/
    root = root or project_root()
    published = out_dir is None
    if out_dir is None:
        out_dir = root / "book" / folder_name if publish else run_folder(root, run_scale(parameters)) / folder_name
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if check:  # `run_models` checks once against the chapters of its whole run
        check_parameters(root, chapters, parameters or {})
    for chapter in chapters:
        log(f"[emolib] {model}: running {chapter} ...")
        started = time.perf_counter()
        own = chapter_parameters(root, chapter)  # each chapter gets the parameters it declares (no "unknown parameter")
        given = {name: value for name, value in {"model": model, **(parameters or {})}.items() if name in own}
        if chapter in CHAPTERS:  # the analysis chapters save their key numbers beside the executed notebook
            given["results_dir"] = _relative(out_dir / "results", root)
        target = _execute(root, chapter, out_dir, given, f" for model {model}")
        timings[chapter] = round(time.perf_counter() - started, 1)
        shown = target.relative_to(root) if target.is_relative_to(root) else target
        log(f"[emolib] {model}: {chapter} done in {timings[chapter]:.0f} s -> {shown}")
        if published:  # after each chapter: a run stopped later keeps the timings of the chapters it finished
            record(out_dir, {chapter: timings[chapter]}, out_dir / "results")
    return timings


CORPUS_CHAPTERS = ("01_stories", "02_neutral")


def run_models(models: list[str], chapters: list[str] | tuple[str, ...] = CHAPTERS, parameters: dict[str, Any] | None = None,
               root: Path | None = None, out_dir: Path | None = None, log=print, publish: bool = False) -> None:
    """Several models' chapters, model after model. Every model reads the same selection of one corpus (the
    keep rule is stored with each story, in words), so the order of the models changes no number; a
    full-scale run reads the published corpus unless another one is named."""

    check_parameters(root or project_root(), chapters, parameters or {})  # before anything runs
    parameters = dict(parameters or {})
    if not parameters.get("corpus") and any(c not in CORPUS_CHAPTERS for c in chapters):
        # chapters 3-7 name their corpus; chapters 1-2 find the same one from scale and writer
        parameters["corpus"] = default_corpus(run_scale(parameters), str(parameters.get("writer") or "smollm2"))
    for model in models:
        run_chapters(model, chapters, parameters, root=root, out_dir=out_dir, log=log, check=False, publish=publish)
        if publish and parameters.get("corpus") == "published" and "03_extract" in chapters:
            card = publish_model_vectors(model, root=root)
            log(f"[emolib] {model}: vectors published -> {card.parent}")
            deep = str(parameters.get("deep_corpus", DEEP))
            if stages.deepens(deep, "published"):
                card = publish_model_vectors(model, deep, root=root)
                log(f"[emolib] {model}: the deep set's vectors published -> {card.parent}")


def publish_model_vectors(model: str, corpus: str = "published", root: Path | None = None, folder: Path | None = None,
                          made_by: str = "") -> Path:
    """Chapter 3's vectors of `model` over the published corpus into book/data/vectors/<model>/ with their data
    card (or into `folder`); what `python -m emolib run --publish` does after chapter 3 on the published corpus."""
    root = root or project_root()
    ready = stages.setup(model, corpus, load=False)
    target = folder or published_vectors_dir(root, ready.profile.name) / ("" if corpus == "published" else corpus)
    return publish_vectors(ready.built, target, model=ready.profile.name,
                           made_by=made_by or f"python -m emolib run --publish --model {model} --chapters 03_extract "
                                              f"-p corpus {corpus} (commit {_commit(root)})")


def _commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_parameters(root: Path, chapters: list[str] | tuple[str, ...], parameters: dict[str, Any]) -> None:
    """Before anything runs: every chapter exists, every parameter is one some chapter declares, and its
    value has the type of that chapter's default (an int stays an int, a float takes ints too, a
    string option may also be a list, as `layers` is)."""
    declared: dict[str, list[tuple[str, Any]]] = {}
    for chapter in chapters:
        source = root / "notebooks" / f"{chapter}.ipynb"
        if not source.exists():
            raise EmolibError(f"no chapter {chapter!r}: {source} does not exist (chapters: {', '.join(CHAPTERS)})")
        for name, (default, _) in chapter_parameters(root, chapter).items():
            declared.setdefault(name, []).append((chapter, default))
    for name, value in parameters.items():
        if name not in declared:
            raise EmolibError(f"no chapter among {', '.join(chapters)} takes a parameter {name!r}; "
                              f"they take: {', '.join(sorted(declared))}")
        for chapter, default in declared[name]:
            expected = type(default)
            ok = (isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)) or \
                 (expected is float and isinstance(value, int) and not isinstance(value, bool)) or \
                 (expected is str and isinstance(value, (list, tuple)))  # "default" or [12] for layers
            if not ok:
                raise EmolibError(f"parameter {name} of {chapter} must be {expected.__name__} like its default "
                                  f"{default!r}, got {value!r} ({type(value).__name__})")
        problems = {chapter: check_value(name, value, scale_default=default == 0) for chapter, default in declared[name]}
        for chapter, problem in problems.items():
            if problem:  # the chapter is named where another one takes the value (0: "the scale's" in chapter 4)
                where = f" of {chapter}" if not all(problems.values()) else ""
                raise EmolibError(f"parameter {name}={value!r}{where}: {problem}")


# Ranges of the chapters' numeric parameters: (lowest allowed, highest allowed or None).
RANGES: dict[str, tuple[float, float | None]] = {
    "n_topics": (0, 100), "dialogue_topics": (0, 100), "stories_per_cell": (0, None), "max_attempts": (1, None), "stories_per_prompt": (1, None),
    "max_new_tokens": (1, None), "batch_size": (1, None), "dialogues_per_topic": (1, None), "max_emotion_words": (0, None),
    "token_budget": (0, None), "n_boot": (1, None), "n_boot_layers": (1, None), "n_perm": (1, None), "n_splits": (1, None),
    "scaling_draws": (1, None), "kmeans_k": (2, None), "groups": (2, None), "n_prompts": (0, 100), "samples": (1, None),
    "blackmail_trials": (0, None), "blackmail_tokens": (1, None), "hack_samples": (0, None), "hack_tokens": (1, None),
    "n_texts": (1, None), "max_chars": (1, None), "seed": (0, None), "top_k": (1, None),
}


def _floats(text: str) -> list[float] | None:
    try:
        return [float(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        return None


def check_value(name: str, value: Any, scale_default: bool = False) -> str | None:
    """What is wrong with a parameter's value beyond its type (None: nothing). `scale_default`: the chapter's default
    is 0, "the scale's value" (chapter 4's resampling counts), so 0 is allowed there, though not for a chapter whose
    own count it would zero (`n_boot` is also chapter 7's)."""
    if scale_default and value == 0 and not isinstance(value, bool):
        return None
    if name in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = RANGES[name]
        if value < low or (high is not None and value > high):
            return f"must be between {low} and {high}" if high is not None else f"must be at least {low}"
    if name == "variance" and isinstance(value, (int, float)) and not 0 < value < 1:
        return "is a share of variance: between 0 and 1 (exclusive)"
    if name == "alphas" and str(value).strip():  # "": the scale's
        values = _floats(value)
        if not values:
            return "needs at least one strength, e.g. \"-0.1,0,0.1\" (comma-separated numbers)"
        if len(set(values)) != len(values):
            return "lists a strength twice"
    if name == "blackmail_sweep" and str(value).strip() and not _floats(value):
        return "must be comma-separated numbers, or \"\" for none"
    if name == "layers" and isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "must be \"default\", \"all\" or a non-empty list of layer numbers"
        if len(set(value)) != len(value):
            return f"lists layer {next(v for v in value if list(value).count(v) > 1)} twice"
    if name == "layers" and isinstance(value, str) and value not in ("default", "all"):
        return "must be \"default\", \"all\" or a list such as [6, 12]"
    if name == "scale":

        if not isinstance(value, str) or value not in SCALES:
            return f"must be one of: {', '.join(SCALES)}"
    if name == "prompt":

        if not isinstance(value, str) or value not in STORY_PROMPTS:
            return f"must be one of: {', '.join(STORY_PROMPTS)}"
    if name == "dtype":

        if not isinstance(value, str) or value not in DTYPES:
            return f"must be one of: {', '.join(DTYPES)}"
    if name == "positions" and not (value in ("generated", "all") or (isinstance(value, int) and value >= 0)):
        return "must be \"generated\", \"all\" or a position (an integer >= 0)"
    return None


def _execute(root: Path, chapter: str, out_dir: Path, parameters: dict[str, Any], context: str = "") -> Path:
    """papermill `notebooks/<chapter>.ipynb` into `out_dir/<chapter>.ipynb`, replacing it only on success
    (a failed run is kept as `.<chapter>.failed.ipynb` beside it); parameter cells are tagged hidden."""
    import papermill

    target, partial = out_dir / f"{chapter}.ipynb", out_dir / f".{chapter}.partial.ipynb"
    try:
        with _progress_to_terminal():
            papermill.execute_notebook(str(root / "notebooks" / f"{chapter}.ipynb"), str(partial), parameters=parameters,
                                       cwd=str(root), progress_bar=False, kernel_name="python3",
                                       kernel_manager_class="emolib.book.kernels.LocalKernelManager")
    except papermill.PapermillExecutionError as error:
        failed = out_dir / f".{chapter}.failed.ipynb"
        os.replace(partial, failed)
        raise EmolibError(f"chapter {chapter} failed{context}: {error.ename}: "
                          f"{_strip_ansi(error.evalue)} (executed notebook kept at {failed})") from None
    _hide_parameter_cells(partial)
    os.replace(partial, target)
    return target


@contextmanager
def _progress_to_terminal(interval: float = 0.5):
    """While a chapter runs, stream the kernel's progress bars (n of N texts, rate, ETA) to this terminal:
    emolib's bars write to the file named by $EMOLIB_PROGRESS (io.progress_bar) instead of the notebook."""
    import tempfile
    import threading

    if progress_disabled() or os.environ.get("EMOLIB_PROGRESS"):
        yield
        return
    handle, path = tempfile.mkstemp(prefix="emolib-progress-", suffix=".txt")
    os.close(handle)
    done = threading.Event()

    def tail() -> None:
        with open(path, "r", errors="replace") as source:
            while not done.is_set():
                text = source.read()
                if text:
                    sys.stderr.write(text)
                    sys.stderr.flush()
                done.wait(interval)
            sys.stderr.write(source.read())

    os.environ["EMOLIB_PROGRESS"] = path  # the kernel inherits it
    thread = threading.Thread(target=tail, daemon=True)
    thread.start()
    try:
        yield
    finally:
        del os.environ["EMOLIB_PROGRESS"]
        done.set()
        thread.join(timeout=5)
        os.unlink(path)


def run_across(root: Path | None = None, log=print, publish: bool = True, scale: str = DEFAULT_SCALE) -> dict[str, float]:
    """Execute the comparison chapter and the appendix from the results on disk: into `book/` for the
    published book, else into the run's folder `runs/book/<scale>/` together with the page that sets the
    run beside the published book (`your_run`)."""
    root = root or project_root()
    out_dir = root / "book" if publish else run_folder(root, scale)
    parameters = {} if publish else {"book_dir": _relative(out_dir, root)}
    chapters = ACROSS if publish else (YOUR_RUN, *ACROSS)
    timings = {}
    for chapter in chapters:
        started = time.perf_counter()
        extra = {"run_dir": parameters["book_dir"], "book_dir": ""} if chapter == YOUR_RUN else parameters
        target = _execute(root, chapter, out_dir, extra)
        timings[chapter] = round(time.perf_counter() - started, 1)
        log(f"[emolib] {chapter} done in {timings[chapter]:.0f} s -> {_relative(target, root)}")
    return timings


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays, tuples, NaN (as null)."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_results(model: str, chapter: str, results: dict[str, Any], folder: str | Path = "") -> Path:
    """A chapter's key numbers as JSON in `folder` (the chapter's `results_dir` parameter; a relative path
    is taken from the project root; "": `book/<model>/results/`): what the comparison chapter and the appendix read."""
    check_results(chapter, results)  # typed: emolib.book.results names what each chapter saves
    # a checkpoint folder given as the model saves under its profile's name, never into the folder itself
    target = Path(folder) if folder else Path("book") / get_profile(model).name / "results"
    target = target if target.is_absolute() else project_root() / target
    return atomic_write_json(target / f"{chapter}.json", _plain({"model": model, "chapter": chapter, **results}))


def _relative(path: Path, root: Path) -> str:
    """A path as the executed notebooks record it: relative to the project root where it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(root.resolve())) if path.is_relative_to(root.resolve()) else str(path)


def load_results(book_dir: Path | str = "") -> dict[str, ModelResults]:
    """{model: ModelResults} for every model with results under `book_dir` (default `book/`), embedded models first."""
    found = load(Path(book_dir) if book_dir else project_root() / "book")
    return dict(sorted(found.items(), key=lambda item: (list(MODEL_TITLES).index(item[0])
                                                          if item[0] in MODEL_TITLES else 99, item[0])))


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _hide_parameter_cells(path: Path) -> None:
    """The book reads like a paper: a settings table instead of papermill's parameter cells, and every
    other code cell folded behind a toggle (Jupyter Book's `hide-input`), its output shown."""
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        for tag, hide in HIDDEN_TAGS.items():
            if tag in tags and hide not in tags:
                tags.append(hide)
        if cell["cell_type"] == "code" and not {"remove-cell", "hide-input", "remove-input"} & set(tags):
            tags.append("hide-input")
    atomic_write_bytes(path, (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode())


def executed_models(root: Path | None = None, folder: Path | None = None) -> list[str]:
    """Models with at least one executed chapter under `folder` (default `book/`), embedded ones first."""
    root = root or project_root()
    folder = folder or root / "book"
    present = [p.name for p in sorted(folder.iterdir()) if p.is_dir() and any(p.glob("[0-9]*.ipynb"))] if folder.is_dir() else []
    return sorted(present, key=lambda m: (list(MODEL_TITLES).index(m) if m in MODEL_TITLES else 99, m))


def reader_runs(root: Path | None = None) -> list[Path]:
    """The reader's runs with executed chapters: runs/book/<scale>/ folders, quick first."""
    root = root or project_root()
    base = root / RUNS_BOOK
    found = [folder for folder in sorted(base.iterdir()) if folder.is_dir() and executed_models(root, folder)] if base.is_dir() else []
    return sorted(found, key=lambda f: (f.name != "quick", f.name))


def _toc_lines(root: Path, folder: Path, caption: str = "") -> list[str]:
    """One part per model of the executed chapters in `folder` (its book-level pages are the caller's)."""
    lines = []
    prefix = _relative(folder, root)
    for model in executed_models(root, folder):
        lines += [f"  - caption: \"{caption}{MODEL_TITLES.get(model, model)}\"", "    chapters:"]
        lines += [f"      - file: {prefix}/{model}/{notebook.stem}" for notebook in sorted((folder / model).glob("[0-9]*.ipynb"))]
    return lines


def write_toc(root: Path | None = None, with_runs: bool = False) -> Path:
    """The table of contents: the intro, the published book (one part per model, then the pages across
    models) and, `with_runs`, each reader's run as "Your run (<scale> scale)" — written to `_toc.yml`
    for the published book alone, else to `_build/_toc.yml` (so a reader's build leaves git clean)."""
    root = root or project_root()
    lines = ["# Generated by `python -m emolib build` from the executed chapters in book/<model>/"
             + (" and runs/book/<scale>/<model>/." if with_runs else "."), "format: jb-book", "root: book/intro", "parts:"]
    lines += _toc_lines(root, root / "book")
    if len(lines) == 4:
        raise EmolibError("no executed chapters under book/<model>/ yet; run `python -m emolib run --model 270m` first")
    across = [chapter for chapter in ACROSS if (root / "book" / f"{chapter}.ipynb").exists()]
    if across:
        lines += ["  - caption: \"Across models\"", "    chapters:"] + [f"      - file: book/{c}" for c in across]
    for folder in reader_runs(root) if with_runs else []:
        pages = [c for c in (YOUR_RUN, *ACROSS) if (folder / f"{c}.ipynb").exists()]
        prefix = _relative(folder, root)
        if pages:
            lines += [f"  - caption: \"Your run ({folder.name} scale)\"", "    chapters:"]
            lines += [f"      - file: {prefix}/{c}" for c in pages]
        lines += _toc_lines(root, folder, f"Your run ({folder.name}): ")
    target = root / "_build" / "_toc.yml" if with_runs else root / "_toc.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(target, ("\n".join(lines) + "\n").encode())


def vendor_assets(root: Path | None = None) -> Path:
    """Copy plotly.js from the installed plotly wheel into book/_vendor (git-ignored, built each time)."""
    import plotly

    root = root or project_root()
    vendor = root / "book" / "_vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not source.exists():
        raise EmolibError(f"plotly.min.js not found in the plotly package ({source}); reinstall plotly")
    shutil.copyfile(source, vendor / "plotly.min.js")
    return vendor


def external_references(html_dir: Path) -> list[str]:
    """`src`/`href` attributes that point off this machine (an offline book must have none that load)."""
    found = []
    pattern = re.compile(r"""<(script|link|img|iframe)\b[^>]*?\b(?:src|href)=["']((?:https?:)?//[^"']+)""", re.IGNORECASE)
    for page in html_dir.rglob("*.html"):
        for match in pattern.finditer(page.read_text(errors="replace")):
            found.append(f"{page.relative_to(html_dir)}: <{match.group(1)}> {match.group(2)}")
    return found


PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _figure_outputs(path: Path) -> list[dict]:
    """The data bundles of an executed notebook's plotly outputs (none where there is no such notebook)."""
    if not path.exists():
        return []
    cells = json.loads(path.read_text()).get("cells", [])
    return [output["data"] for cell in cells for output in cell.get("outputs", [])
            if PLOTLY_MIME in output.get("data", {})]


def figures_in_notebook(path: Path) -> int:
    """How many plotly figures an executed notebook displays (0 where there is no such notebook)."""
    return len(_figure_outputs(path))


def figures_without_html(path: Path) -> int:
    """Plotly outputs of an executed notebook that carry no text/html (the rendered book cannot draw them)."""
    return sum("text/html" not in data for data in _figure_outputs(path))


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_check(html_dir: Path | None = None, pages: list[str] | None = None, screenshot: str = "geometry",
                  log=print, timeout: float = 120.0) -> dict[str, int]:
    """Open pages of the built book in headless Chromium with every network route closed, and check that
    each plotly figure drew (its div holds an SVG plot). Returns {page: figures drawn}; raises on a
    figure that did not draw. Screenshots the first page whose name contains `screenshot`."""
    chromium = find_chromium()
    if chromium is None:
        raise EmolibError("no Chromium found; install it (Debian: apt-get install chromium) to run the browser check")
    html_dir = html_dir or project_root() / "_build" / "html"
    if not (html_dir / "index.html").exists():
        raise EmolibError(f"no built book at {html_dir}; run `python -m emolib build` first")
    pages = pages or sorted(str(p.relative_to(html_dir)) for pattern in ("book/**/*.html", "runs/book/**/*.html")
                            for p in html_dir.glob(pattern))
    offline = ["--headless=new", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--no-first-run", "--virtual-time-budget=15000"]
    drawn: dict[str, int] = {}
    shot_done = False
    for page in pages:
        url = (html_dir / page).resolve().as_uri()
        result = subprocess.run([chromium, *offline, "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
        dom = result.stdout
        if result.returncode != 0 or "</html>" not in dom:
            raise EmolibError(f"Chromium could not open {page}: {result.stderr.strip()[-300:]}")
        parts = re.split(r'<div id="(fig-[0-9a-f]{12})"', dom)  # [before, id, after, id, after, ...]
        figures = parts[1::2]
        missing = [fig for fig, after in zip(parts[1::2], parts[2::2]) if 'class="main-svg"' not in after]
        if missing:
            raise EmolibError(f"{page}: {len(missing)} of {len(figures)} figures did not draw, e.g. {missing[0]} "
                              f"(is book/_vendor/plotly.min.js in the build?)")
        expected = figures_in_notebook(html_dir.parent.parent / Path(page).with_suffix(".ipynb"))
        if len(figures) < expected:
            raise EmolibError(f"{page}: its notebook has {expected} figures but the page shows {len(figures)} "
                              "(an output without text/html: was emolib.book.plots imported before the figure was displayed?)")
        drawn[page] = len(figures)
        log(f"[emolib] {page}: {len(figures)} figures drew")
        if screenshot and screenshot in page and not shot_done:
            target = html_dir.parent / f"screenshot-{Path(page).stem}.png"
            subprocess.run([chromium, *offline, "--window-size=1280,2600", f"--screenshot={target}", url],
                           capture_output=True, timeout=timeout)
            shot_done = target.exists()
            if shot_done:
                log(f"[emolib] screenshot: {target}")
    return drawn


def write_scale_note(root: Path | None = None) -> Path:
    """book/_generated/scale.md, included by the intro: which scale produced each model's numbers."""
    root = root or project_root()
    lines = ["| model | scale | emotions | topics | kept stories per (emotion, topic) | kept stories per emotion (min / median) | cells at quota |",
             "|---|---|---|---|---|---|---|"]
    for model in executed_models(root):
        path = root / "book" / model / "results" / "01_stories.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        kept = r.get("kept_per_emotion", {})
        fill = r.get("fill_rate")
        lines.append(f"| {MODEL_TITLES.get(model, model)} | **{r.get('scale', 'quick (before the balanced design)')}** | "
                     f"{r.get('emotions', '?')} | {r.get('topics', '?')} | {r.get('per_cell', '-')} | "
                     f"{kept.get('min', '?')} / {kept.get('median', '?')} | {'-' if fill is None else f'{fill:.1%}'} |")
    text = ("The numbers in this book come from runs at these scales (`python -m emolib book -p scale full` "
            "reproduces the full one; `make book` runs the quick one):\n\n" + "\n".join(lines) + "\n")
    return atomic_write_bytes(root / "book" / "_generated" / "scale.md", text.encode())


def write_findings_note(root: Path | None = None) -> Path:
    """book/_generated/findings.md, included by the intro: the central claim's numbers per model, each beside its
    text-only baseline or null (emolib.book.compare.FINDING_ROWS, read from the saved results)."""
    root = root or project_root()
    models = executed_models(root)
    text = ("Per model, from each chapter's saved numbers (the comparison chapter has every row, with the published "
            "ones beside them):\n\n" + findings_markdown(load(root / "book"), models, {m: MODEL_TITLES.get(m, m) for m in models}))
    return atomic_write_bytes(root / "book" / "_generated" / "findings.md", text.encode())


def build(root: Path | None = None, log=print, publish: bool = False) -> Path:
    """Build the HTML book from the executed chapters (no execution), and check it loads nothing remote:
    the published book, and beside it every reader's run under runs/book/. `publish` builds the
    published book alone and rewrites its tracked `_toc.yml` and scale note; otherwise the build writes
    only under `_build/`."""
    root = root or project_root()
    if publish:  # the published HTML holds the published book alone
        toc = write_toc(root)
        write_scale_note(root)
        write_findings_note(root)
    else:
        toc = write_toc(root, with_runs=True)
    vendor_assets(root)
    command = [sys.executable, "-m", "jupyter_book", "build", "--all", "--toc", str(toc), str(root)]
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb:
        command = [jb, "build", "--all", "--toc", str(toc), str(root)]
    log("[emolib] building the book ...")
    started = time.perf_counter()
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise EmolibError(f"jupyter-book build failed (exit {result.returncode}):\n{tail}")
    html = root / "_build" / "html"
    remote = external_references(html)
    if remote:
        raise EmolibError(f"the built book loads {len(remote)} remote resource(s), e.g. {remote[0]}")
    log(f"[emolib] book built in {time.perf_counter() - started:.0f} s: {html / 'index.html'}")
    return html
