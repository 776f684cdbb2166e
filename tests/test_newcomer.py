"""A researcher's first hour (issue 40): each friction a newcomer met, as a test that fails if it comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emolib import EmotionVectors
from emolib.book import parameters as P
from emolib.book import runner as book
from emolib.errors import EmolibError

ROOT = Path(__file__).resolve().parents[1]


def test_help_is_fast_lists_every_subcommand_and_each_chapters_parameters():
    """`--help` imports no torch (it took 3-8 s), lists all ten subcommands, and `run --help` every `-p` name."""
    probe = ("import sys, emolib.__main__ as m\nm._parser()\nprint('torch' in sys.modules)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    assert time.perf_counter() - started < 10
    top = subprocess.run([sys.executable, "-m", "emolib", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    for command in ("run", "book", "build", "compare", "corpus", "extract", "vectors", "plan", "models", "browser-check"):
        assert command in top
    run = subprocess.run([sys.executable, "-m", "emolib", "run", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    for name in ("-p alphas", "-p n_topics", "-p dialogue_topics", "-p layers", "-p sycophancy_questions", "-p deep_corpus"):
        assert name in run, name


def test_negative_alpha_lists_and_ints_for_layers_come_through_the_cli():
    from emolib.__main__ import pull_parameters, typed_parameters

    rest, pairs = pull_parameters(["run", "--model", "270m", "-p", "alphas", "-0.3,0.3", "--parameter", "layers", "12",
                                   "-p", "n_boot", "200", "-p", "aligned_axes", "false"])
    assert rest == ["run", "--model", "270m"]
    typed = typed_parameters(pairs, P.CHAPTERS)
    assert typed == {"alphas": "-0.3,0.3", "layers": [12], "n_boot": 200, "aligned_axes": False}
    book.check_parameters(ROOT, list(P.CHAPTERS), typed)  # accepted as typed: no "expected 2 arguments"
    assert typed_parameters([("alphas", "0.3,-0.3")], P.CHAPTERS) == {"alphas": "0.3,-0.3"}  # no tuple
    assert typed_parameters([("alphas", "'-0.3,0.3'")], P.CHAPTERS) == {"alphas": "-0.3,0.3"}  # the old quoting works
    assert P.coerce("layers", "[6, 12]", "default") == [6, 12] and P.coerce("layers", "all", "default") == "all"
    with pytest.raises(EmolibError, match="parameter n_boot is a whole number like its default"):
        typed_parameters([("n_boot", "many")], P.CHAPTERS)
    with pytest.raises(EmolibError, match="takes a name and a value"):
        pull_parameters(["run", "-p", "alphas"])


def test_the_two_topic_counts_have_two_names():
    stories, dialogues = P.declared(ROOT, "01_stories"), P.declared(ROOT, "02_neutral")
    assert "n_topics" in stories and "n_topics" not in dialogues and "dialogue_topics" in dialogues


def test_an_unknown_model_gets_a_did_you_mean():
    from emolib.models.profiles import get_profile

    with pytest.raises(EmolibError, match="did you mean '270m'"):
        get_profile("27om")


def test_papermill_gets_only_each_chapters_declared_parameters(tmp_path):
    """A run's -p is shared by its chapters; papermill warned "Passed unknown parameter" for every one a chapter does
    not declare. Each chapter is now given its own."""
    import nbformat

    for chapter, source in (("01_stories", 'model = "270m"\nn_topics = 0'), ("02_neutral", 'model = "270m"\ndialogue_topics = 0')):
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("print(sorted(globals())[:0])")]
        notebook.cells[0].metadata["tags"] = ["parameters"]
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        nbformat.write(notebook, tmp_path / "notebooks" / f"{chapter}.ipynb")
    book.run_models(["tiny"], ["01_stories", "02_neutral"], {"n_topics": 3, "dialogue_topics": 5}, root=tmp_path,
                    log=lambda *_: None)
    for chapter, own, other in (("01_stories", "n_topics = 3", "dialogue_topics"), ("02_neutral", "dialogue_topics = 5", "n_topics")):
        executed = json.loads((tmp_path / "runs" / "book" / "quick" / "tiny" / f"{chapter}.ipynb").read_text())
        injected = next("".join(c["source"]) for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
        assert own in injected and other not in injected


def test_nothing_is_written_into_a_models_folder(tmp_path, monkeypatch, llama_checkpoint):
    """`papermill notebooks/03_extract.ipynb ... -p model <folder>` saved results/03_extract.json inside the checkpoint:
    a chapter's default results folder is book/<the profile's name>/results."""
    folder = llama_checkpoint
    monkeypatch.setenv("EMOLIB_HOME", str(tmp_path / "project"))
    saved = book.save_results(str(folder), "05_logit_lens", {"layer": 1, "self_named": 0, "emotions": 2,
                                                              "self_named_by_layer": {}, "self_named_chance": {},
                                                              "self_named_label_null": {}})
    assert saved.is_relative_to(tmp_path / "project" / "book")
    assert not (folder / "results").exists()


def test_bad_corpus_and_api_inputs_are_one_line(tmp_path, tiny_gemma3):
    from emolib.stories import corpus as C

    store = tmp_path / "corpus"
    store.mkdir()
    record = {"job": "story/happy/000/0", "n_in_job": 1, "id": "story/happy/000/0/0", "kind": "story", "emotion": "happy"}
    (store / "stories.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(EmolibError, match=r"record 'story/happy/000/0/0' has no text; every record needs a text string"):
        C.records_frame(C.Corpus(store))
    long = "The rain came down over the quiet town and nobody went outside for the whole long day. " * 6
    with pytest.raises(EmolibError, match="train needs neutral texts"):
        EmotionVectors.train(tiny_gemma3.model, tiny_gemma3.tokenizer, {"happy": [long], "sad": [long]}, neutral=[])
    with pytest.raises(EmolibError, match="train needs stories for at least 2 emotions"):
        EmotionVectors.train(tiny_gemma3.model, tiny_gemma3.tokenizer, {"happy": [long]}, neutral=[long, long])
    with pytest.raises(EmolibError, match="every story of 2 of the 2 emotions is shorter than the 51 tokens"):
        EmotionVectors.train(tiny_gemma3.model, tiny_gemma3.tokenizer, {"happy": ["short"], "sad": ["short"]},
                             neutral=[long, long])


def test_vectors_trained_in_memory_load_on_the_same_model_and_print_short(tmp_path, llama_checkpoint):
    """`EmotionVectors.train(lm.model, lm.tokenizer, ...)` then `EmotionVectors.load(path, model=lm)` was refused:
    the trained vectors named the converted folder, the loaded model its profile."""
    from emolib import models

    lm = models.load(str(llama_checkpoint))
    text = "and the rain fell on the door then she walked home slowly the night came and the window closed " * 8
    vectors = EmotionVectors.train(lm.model, lm.tokenizer, {"happy": [text, text + " yes"], "sad": [text + " no", text]},
                                   neutral=[text, text + " the"])
    vectors.save(tmp_path / "v")
    assert EmotionVectors.load(tmp_path / "v", model=lm).emotions == ["happy", "sad"]
    with pytest.raises(EmolibError, match="holds vectors for model"):
        EmotionVectors.load(tmp_path / "v", model="270m")
    shown = repr(vectors)
    assert len(shown) < 200 and "2 emotions" in shown and "tensor" not in shown


def test_the_readme_says_where_runs_go_and_is_short():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "into book/270m/" not in readme and "runs/book/" in readme
    for promised in ("EMOLIB_THREADS", "make book", "make test", "docs/guarantees.md"):
        assert promised in readme, promised


def test_threads_follow_the_environment_and_the_box(monkeypatch, tmp_path):
    from emolib import threads

    monkeypatch.setattr(threads, "_registry", lambda: tmp_path)  # this box's own emolib runs stay out of the test

    monkeypatch.setenv("EMOLIB_THREADS", "1")
    assert threads.choose() == (1, "EMOLIB_THREADS=1")
    monkeypatch.delenv("EMOLIB_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose()[0] == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    marker = threads._registry() / str(other.pid)
    try:
        marker.touch()  # another emolib process at work
        assert threads.choose()[0] == 1 and "other emolib process" in threads.choose()[1]
    finally:
        other.kill()
        other.wait()
    assert threads.other_workers() == 0 and not marker.exists()  # a dead one is forgotten


def test_threads_read_the_tasks_running_now_not_the_trailing_load(monkeypatch):
    """Right after a long job ends the 1-minute load average still says "busy" for minutes; the kernel's count of
    running tasks (less this process) does not."""
    from emolib import threads

    for name in ("EMOLIB_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "other_workers", lambda: 0)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.9, 1.9, 1.9))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _: {0, 1})
    readings = iter(["cpu 1 2 3\nprocs_running 1\nprocs_blocked 0\n"] * 5)

    class Proc:
        def __init__(self, *_):
            pass

        def read_text(self):
            return next(readings)

    monkeypatch.setattr(threads, "Path", Proc)
    assert threads.choose() == (2, "0 other running tasks on 2 cores; EMOLIB_THREADS sets it")
    readings = iter(["procs_running 2\n"] * 5)
    assert threads.choose()[0] == 1


def test_make_lab_passes_allow_root_to_root():
    makefile = (ROOT / "Makefile").read_text()
    lab = makefile[makefile.index("\nlab:"):].split("\n\n")[0]
    assert "--allow-root" in lab and "id -u" in lab


def test_the_plan_covers_a_checkpoint_folder_and_says_how_it_measured(llama_checkpoint):
    from emolib.book import plan

    folder = llama_checkpoint
    made = plan.make_plan(str(folder), {"scale": "quick"}, rate=1e10)
    text = plan.format_plan(made)
    assert "config.json (read offline)" in text and "how it measured" in text and "load average" in text
    assert (made["measured"]["busy"] > plan.BUSY_LOAD) == ("this box is busy" in text)


def test_papermill_parses_every_notebooks_parameters_cell(caplog):
    """papermill reads a parameters cell line by line with a regex; a comment holding `""` made it log "Unable to parse
    line" and then "Passed unknown parameter: book_dir" on every `make book`, for the comparison and the appendix."""
    import logging

    import papermill

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 12
    with caplog.at_level(logging.WARNING, logger="papermill"):
        for path in notebooks:
            assert papermill.inspect_notebook(str(path)), path.name
    assert [r.getMessage() for r in caplog.records if "parse" in r.getMessage()] == []


def test_the_chapters_kernel_sockets_stay_out_of_the_checkout(tmp_path, monkeypatch):
    """jupyter_client puts IPC sockets in the working directory (`kernel-ipc-1`, ...); a killed `make book` left 15 of
    them in the checkout's root. They go to a private folder under the temporary directory, under a prefix of their own:
    a shared prefix let two concurrent runs pick the same socket names and read each other's messages."""
    from emolib.book.kernels import LocalKernelManager, ipc_folder

    monkeypatch.chdir(tmp_path)
    manager = LocalKernelManager()
    assert manager.transport == "ipc" and manager.ip.startswith(str(ipc_folder()))
    assert (ipc_folder().stat().st_mode & 0o777) == 0o700
    assert LocalKernelManager().ip != manager.ip  # the next kernel, in this process or another, never shares sockets
    assert LocalKernelManager(transport="tcp").ip in ("127.0.0.1", "localhost")
