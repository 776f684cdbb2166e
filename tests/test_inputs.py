"""Every file a user hands in either works or stops with one line naming the file, the place and what to
do; one run per store; fuzzed with hypothesis (no input raises anything but EmolibError, no stored
record is lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emolib.book import runner as book
from emolib.extraction import vectors as V
from emolib.errors import EmolibError, StoreError
from emolib.io import JobStore, store_lock
from emolib.analysis.readers import read_texts

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- readers ---------------------------------------------------------------------------------------

def test_a_torn_jsonl_line_is_named_with_its_file_and_line(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n{"text": "thr')
    with pytest.raises(EmolibError, match=r"texts.jsonl, line 3: not valid JSON .*torn line"):
        read_texts(path)


def test_records_without_text_are_skipped_and_counted(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "kept one"}\n{"text": null}\n{"other": 1}\n{"text": "  "}\n{"text": 5}\n\n{"text": "kept two"}\n')
    frame = read_texts(path)
    assert frame["text"].tolist() == ["kept one", "kept two"]
    assert frame.attrs["skipped"] == {"null text": 1, "no text field": 1, "empty text": 1, "text not a string": 1}
    assert frame.attrs["records"] == 6 and frame["id"].tolist() == ["t/0", "t/5"]  # the record ordinal
    path.write_text('{"text": null}\n{"body": "x"}\n')
    with pytest.raises(EmolibError, match=r"no usable text in field 'text' \(1 null text, 1 no text field\)"):
        read_texts(path)
    path.write_text('["text"]\n')
    with pytest.raises(EmolibError, match=r"line 1: a JSON list where a record"):
        read_texts(path)


def test_an_empty_csv_and_a_missing_column_say_what_to_do(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(EmolibError, match="e.csv is empty: a .csv needs a header row"):
        read_texts(empty)
    other = tmp_path / "o.csv"
    other.write_text("body,label\nhello,x\n")
    with pytest.raises(EmolibError, match=r"o.csv has no column 'text' \(columns: body, label\)"):
        read_texts(other)
    good = tmp_path / "g.csv"
    good.write_text('text,label\n"a, quoted\nmulti-line text",pos\n,neg\nplain,neg\n')
    frame = read_texts(good, label_field="label")
    assert frame["text"].tolist() == ["a, quoted\nmulti-line text", "plain"] and frame["label"].tolist() == ["pos", "neg"]
    assert frame.attrs["skipped"] == {"empty text": 1}


def test_parquet_works_out_of_the_box(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["alpha text", None, "gamma text"], "label": ["a", "b", "c"]}), path)
    frame = read_texts(path, label_field="label")
    assert frame["text"].tolist() == ["alpha text", "gamma text"] and frame["label"].tolist() == ["a", "c"]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(EmolibError, match="bad.parquet is not a readable parquet file"):
        read_texts(bad)


def test_a_txt_of_blank_lines_is_refused_and_passages_are_split(tmp_path):
    blank = tmp_path / "b.txt"
    blank.write_text("\n\n   \n\n")
    with pytest.raises(EmolibError, match="b.txt: no usable text"):
        read_texts(blank)
    text = tmp_path / "t.txt"
    text.write_text("First passage\nstill first.\n\n\nSecond passage.\n")
    assert read_texts(text)["text"].tolist() == ["First passage\nstill first.", "Second passage."]


def test_encodings_are_handled_or_named(tmp_path):
    latin = tmp_path / "l.txt"
    latin.write_bytes("Plain line.\n\nCaf\xe9 au lait.\n".encode("latin-1"))
    with pytest.raises(EmolibError, match=r"l.txt, line 3: not utf-8 text .*encoding='latin-1'"):
        read_texts(latin)
    assert read_texts(latin, encoding="latin-1")["text"].tolist() == ["Plain line.", "Café au lait."]
    wide = tmp_path / "w.jsonl"
    wide.write_bytes('{"text": "über"}\n'.encode("utf-16"))
    assert read_texts(wide)["text"].tolist() == ["über"]
    bom = tmp_path / "b.csv"
    bom.write_bytes("text\nhello\n".encode("utf-8-sig"))
    assert read_texts(bom)["text"].tolist() == ["hello"]
    with pytest.raises(EmolibError, match="unknown text encoding 'klingon'"):
        read_texts(latin, encoding="klingon")
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(EmolibError, match="unsupported format '.docx'"):
        read_texts(tmp_path / "x.docx")


def test_the_sample_cap_is_a_seeded_uniform_sample(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}"}) + "\n" for i in range(1000)))
    a, b = read_texts(path, max_texts=50, seed=1), read_texts(path, max_texts=50, seed=1)
    assert a["id"].tolist() == b["id"].tolist() and len(a) == 50 and a["id"].is_unique
    assert read_texts(path, max_texts=50, seed=2)["id"].tolist() != a["id"].tolist()
    positions = [int(i.split("/")[1]) for i in a["id"]]
    assert positions == sorted(positions) and max(positions) > 500  # spread over the file, kept in file order


def test_a_big_jsonl_is_streamed_in_flat_memory(tmp_path):
    """Peak memory of reading a ~300 MB JSONL with a sample cap, against reading a tiny one."""
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    line = (json.dumps({"text": "word " * 200, "label": "x"}) + "\n").encode()
    with open(big, "wb") as handle:
        chunk = line * 1000
        for _ in range(300 * 1024 * 1024 // len(chunk)):
            handle.write(chunk)
    small.write_bytes(line * 10)
    script = textwrap.dedent("""
        import resource, sys
        from emolib.analysis.readers import read_texts
        frame = read_texts(sys.argv[1], max_texts=100, seed=0)
        print(len(frame), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    peaks = {}
    for name, path in (("small", small), ("big", big)):
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        peaks[name] = int(out.stdout.split()[1]) / 1024  # MiB
    assert big.stat().st_size > 250 * 1024 * 1024
    assert peaks["big"] - peaks["small"] < 64, peaks  # a 300 MB file costs less than 64 MiB more than a 10-line one


# --- other inputs ----------------------------------------------------------------------------------

def _vectors(tmp_path: Path) -> Path:
    vectors = V.EmotionVectors(["happy", "sad"], (1, 2), torch.randn(2, 2, 8), {"model": "tiny", "residual_norm": {"1": 2.0, "2": 3.0}})
    return vectors.save(tmp_path / "vectors")


def test_truncated_or_foreign_vector_files_are_one_line(tmp_path):
    path = _vectors(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EmolibError, match="the vector files are corrupted or not emolib's"):
        V.EmotionVectors.load(path)
    path.write_bytes(os.urandom(300))
    with pytest.raises(EmolibError, match="corrupted or not emolib's"):
        V.EmotionVectors.load(path)
    good = _vectors(tmp_path / "again")
    with pytest.raises(EmolibError, match=r"vectors: no vector for emotion 'calm'"):
        V.EmotionVectors.load(good, emotions=["happy", "calm"])
    with pytest.raises(EmolibError, match=r"no vectors at layer 7; these were extracted at layers \[1, 2\]"):
        V.EmotionVectors.load(good, layers=[7])
    assert V.EmotionVectors.load(good, emotions=["sad"], layers=[2]).vectors.shape == (1, 1, 8)
    good.with_suffix(".json").write_text('{"emotions": ["happy"]}')
    with pytest.raises(EmolibError, match="corrupted or not emolib's"):
        V.EmotionVectors.load(good)


def test_control_vector_reader_refuses_broken_files(tmp_path):
    vectors = V.EmotionVectors.load(_vectors(tmp_path))
    path = vectors.to_control_vector(tmp_path / "happy.gguf", "happy")
    assert sorted(V.read_control_vector(path)) == [1, 2]
    data = path.read_bytes()
    for broken in (data[: len(data) // 3], os.urandom(512), b""):
        path.write_bytes(broken)
        with pytest.raises(EmolibError, match="happy.gguf"):
            V.read_control_vector(path)


@pytest.mark.parametrize("parameters,message", [
    ({"n_topics": -1}, r"parameter n_topics=-1: must be between 0 and 100"),
    ({"alphas": ","}, r"alphas=',': needs at least one strength"),
    ({"alphas": "0.1,x"}, r"needs at least one strength"),
    ({"layers": [3, 3]}, r"layers=\[3, 3\]: lists layer 3 twice"),
    ({"batch_size": 0}, r"batch_size=0: must be at least 1"),
    ({"variance": 1.5}, r"between 0 and 1"),
    ({"scale": "huge"}, r"scale='huge': must be one of: quick, full"),
])
def test_parameters_of_the_right_type_but_out_of_range(parameters, message):
    chapters = [c for c in book.CHAPTERS]
    with pytest.raises(EmolibError, match=message):
        book.check_parameters(ROOT, chapters, parameters)


def test_every_chapter_default_is_in_range():
    import ast

    import papermill

    for chapter in book.CHAPTERS:
        for name, info in papermill.inspect_notebook(str(ROOT / "notebooks" / f"{chapter}.ipynb")).items():
            default = ast.literal_eval(info["default"])
            assert book.check_value(name, default, scale_default=default == 0) is None, (chapter, name)
    # 0 is "the scale's" where a chapter's default says so (chapter 4), and refused for a chapter it would zero
    book.check_parameters(ROOT, ["04_geometry"], {"n_boot": 0, "n_perm": 0})
    with pytest.raises(EmolibError, match="n_boot=0 of 07_steering: must be at least 1"):
        book.check_parameters(ROOT, ["04_geometry", "07_steering"], {"n_boot": 0})


# --- one run per store -----------------------------------------------------------------------------

HOLDER = """
import sys, time
from emolib.io import store_lock
with store_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(60)
"""
WRITER = """
import sys
from emolib.stories import corpus as C
from emolib.errors import EmolibError
from emolib.writers.generate import Generation

class W:
    name = "w"
    def generate(self, messages_list, seeds, **kwargs):
        return [Generation("A story long enough to keep for the test. " * 3, 30, True) for _ in seeds]

settings = C.CorpusSettings(writer="w")
try:
    C.write_jobs(C.Corpus(sys.argv[1], settings), C.story_jobs(settings, ["happy"], C.select_topics(2), 1), W(), progress=False)
except EmolibError as error:
    print(f"emolib: error: {error}", file=sys.stderr)
    sys.exit(2)
print("written")
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def test_a_second_writer_is_stopped_and_a_killed_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "corpus"
    holder = _python(HOLDER, str(folder))
    try:
        assert holder.stdout.readline().strip() == "holding"
        second = _python(WRITER, str(folder))
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"is being written by another run (pid {holder.pid}, started " in lines[0]
        assert "store_lock" not in lines[0] and "wait for it to finish" in lines[0]
        assert not (folder / "stories.jsonl").exists()  # nothing written by the refused run
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    third = _python(WRITER, str(folder))  # the dead holder's flock went with it
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0 and out.strip() == "written", err
    assert len(JobStore(folder / "stories.jsonl").done_jobs) == 2


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with store_lock(tmp_path):
        with store_lock(tmp_path):  # nested use (write_balanced -> write_jobs) re-enters
            pass
        with store_lock(tmp_path):  # still held after the inner block, and re-entered again
            pass
    holder = _python(HOLDER, str(tmp_path))  # released: another process takes it at once
    try:
        assert holder.stdout.readline().strip() == "holding"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# --- fuzzing ---------------------------------------------------------------------------------------

@FUZZ
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".txt", ".parquet"]))
def test_fuzz_readers_raise_only_emolib_errors(tmp_path_factory, content, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(content)
    try:
        frame = read_texts(path, label_field=None)
    except EmolibError as error:
        assert "\n" not in str(error).strip() or suffix == ".csv"
    else:
        assert len(frame) > 0 and frame["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all()


@FUZZ
@given(records=st.lists(st.text(max_size=30), min_size=1, max_size=6), cut=st.floats(0, 1), junk=st.binary(max_size=60))
def test_fuzz_job_store_repairs_torn_tails_and_loses_no_stored_job(tmp_path_factory, records, cut, junk):
    path = tmp_path_factory.mktemp("store") / "s.jsonl"
    store = JobStore(path)
    for i, text in enumerate(records):
        store.append_job(f"j{i}", [{"id": f"j{i}/0", "text": text}])
    complete = path.read_bytes()
    ends = [i + 1 for i, byte in enumerate(complete) if byte == ord("\n")]  # where each job's line ends
    at = int(cut * len(complete))
    path.write_bytes(complete[:at] + junk)
    try:
        reopened = JobStore(path)
    except StoreError:
        # only when the junk itself holds a well-formed record after a bad line: refused, file untouched
        assert path.read_bytes() == complete[:at] + junk
        return
    survivors = sum(end <= at for end in ends)
    kept = [r["id"] for r in reopened.records]
    assert kept[:survivors] == [f"j{i}/0" for i in range(survivors)]  # every job written before the cut is there
    assert all(json.loads(line) for line in path.read_bytes().splitlines() if line.strip())


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8), cut=st.floats(0.05, 1.0))
def test_fuzz_control_vector_reader(tmp_path_factory, flips, cut):
    folder = tmp_path_factory.mktemp("gguf")
    vectors = V.EmotionVectors.load(_vectors(folder))
    path = vectors.to_control_vector(folder / "v.gguf", "sad")
    data = bytearray(path.read_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    path.write_bytes(bytes(data[: max(1, int(cut * len(data)))]))
    try:
        directions = V.read_control_vector(path)
    except EmolibError:
        return
    assert directions and all(torch.isfinite(v).all() for v in directions.values())


@FUZZ
@given(name=st.sampled_from(sorted(book.RANGES) + ["alphas", "layers", "scale", "prompt", "positions", "variance"]),
       value=st.one_of(st.integers(-5, 500), st.floats(allow_nan=True), st.text(max_size=12),
                       st.lists(st.integers(-3, 40), max_size=5)))
def test_fuzz_parameter_checking_raises_only_emolib_errors(name, value):
    try:
        book.check_parameters(ROOT, list(book.CHAPTERS), {name: value})
    except EmolibError as error:
        assert "\n" not in str(error)
