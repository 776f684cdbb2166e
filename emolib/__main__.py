"""Command line: `python -m emolib {run,book,build,compare,corpus,extract,vectors,plan,models,browser-check}`.

    python -m emolib book                      # every chapter for the embedded models into runs/book/<scale>/, build
    python -m emolib book --publish -p scale full   # re-execute the published book in book/ (explicit)
    python -m emolib run --model 31b -p n_topics 100 -p writer_url http://127.0.0.1:8000/v1
    python -m emolib build                     # re-render the published book and your runs beside it
    python -m emolib corpus --scale full --out DIR  # chapters 1-2's stories and dialogues alone (no notebooks)

A run never writes into the published book (book/) unless --publish says so: it writes its executed
chapters to runs/book/<scale>/<model>/, and the build shows them as "Your run" beside the published book.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import EmolibError

# Only the standard library and emolib's light modules load before a command runs: `--help` answers at once, and
# torch is imported by the commands that need it.
from .book.parameters import CHAPTERS  # noqa: E402 (light: no torch)


def pull_parameters(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Take every `-p NAME VALUE` / `--parameter NAME VALUE` out of argv before argparse sees it, so a value that
    starts with "-" (`-p alphas -0.3,0.3`) is a value, not an option."""
    rest, pairs, i = [], [], 0
    while i < len(argv):
        if argv[i] in ("-p", "--parameter"):
            if i + 2 >= len(argv):
                raise EmolibError(f"{argv[i]} takes a name and a value, e.g. -p scale full")
            pairs.append((argv[i + 1], argv[i + 2]))
            i += 3
        else:
            rest.append(argv[i])
            i += 1
    return rest, pairs


def typed_parameters(pairs: list[tuple[str, str]], chapters: list[str] | tuple[str, ...]) -> dict[str, object]:
    """Each value as the type its chapter declares (`emolib.book.parameters.coerce`); a name no chapter takes is kept
    as typed and refused by the runner's check with the list of names."""
    from .book.parameters import coerce, declared
    from .io import project_root

    defaults: dict[str, object] = {}
    for chapter in chapters:
        for name, (default, _) in declared(project_root(), chapter).items():
            defaults.setdefault(name, default)
    return {name: coerce(name, value, defaults[name]) if name in defaults else value for name, value in pairs}


def _run_epilog() -> str:
    from .book.parameters import parameter_help
    from .io import project_root

    try:
        return "chapter parameters (-p NAME VALUE):\n" + parameter_help(project_root(), CHAPTERS)
    except EmolibError:
        return ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emolib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,book,build,compare,corpus,extract,vectors,plan,"
                                "models,browser-check}")
    for name in ("run", "book"):
        command = sub.add_parser(name, help="run chapters with papermill" + (" and build the book" if name == "book" else ""),
                                 epilog=_run_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_argument("--model", action="append",
                             help="analysed model: a profile (`python -m emolib models`) or a checkpoint folder (repeatable); default: " +
                                  ("270m" if name == "run" else "the embedded models, 270m and smollm2"))
        command.add_argument("--chapters", default="", help="comma-separated chapter names; default all")
        command.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                             help="a chapter parameter, as with papermill -p (listed below); a value may start with '-'")
        command.add_argument("--out", default="", help="write executed chapters here instead of runs/book/<scale>/<model>/")
        command.add_argument("--publish", action="store_true",
                             help="write into the published book, book/<model>/ (book: also its comparison, "
                                  "appendix and _toc.yml)")
    command = sub.add_parser("vectors", help="write a model's vectors with a data card (safetensors, llama.cpp "
                                             "control vectors, SHA-256s): book/data/vectors/<model>/ for the published corpus")
    command.add_argument("--model", action="append", required=True)
    command.add_argument("--corpus", default="published", help="the corpus chapter 3 read (default: the published one)")
    command.add_argument("--out", default="", help="the folder (default: book/data/vectors/<model>/, published corpus only)")
    command = sub.add_parser("extract", help="extract a corpus's activations (run under torchrun/accelerate to split it)")
    command.add_argument("--model", default="270m")
    command.add_argument("--corpus", default="smollm2", help="folder under runs/corpus/")
    command.add_argument("--layers", default="default", help='"default", "all", or comma-separated indices')
    command.add_argument("--emotions", default="all")
    command.add_argument("--token-budget", type=int, default=0, help="padded tokens per pass; 0: 1024 on CPU, 16384 on GPU")
    command.add_argument("--shard-texts", type=int, default=256)
    command.add_argument("--max-emotion-words", type=int, default=None,
                         help="neutral dialogues with more distinct emotion words are left out (default 2)")
    command = sub.add_parser("corpus", help="write a corpus as chapters 1 and 2 do, without the notebooks "
                                            "(how the published corpus was made)")
    command.add_argument("--scale", default="quick", help='"quick" or "full"')
    command.add_argument("--writer", default="smollm2", help="a local model profile with a chat template")
    command.add_argument("--emotions", default="all")
    command.add_argument("--out", required=True, help="the corpus folder (created; a killed run resumes in it)")
    command.add_argument("--extends", default="", help="deepen this stored corpus (e.g. published) instead: its "
                                                      "stories stay first in every cell, the new ones go to --out")
    command.add_argument("--per-cell", type=int, default=0, help="with --extends: kept stories per cell to reach (e.g. 8)")
    command.add_argument("--batch-size", type=int, default=128)
    command.add_argument("--dtype", default="auto", help='"auto" (fp32 on CPU, the profile\'s on GPU), "fp32", "bf16"')
    command.add_argument("--token-budget", type=int, default=16384,
                         help="rows x longest prompt per batch (raise it with --batch-size on a large GPU)")
    command = sub.add_parser("build", help="build the HTML book from executed chapters (no execution)")
    command.add_argument("--publish", action="store_true", help="also rewrite the published book's _toc.yml and scale note")
    sub.add_parser("browser-check", help="open the built book in headless Chromium (offline) and check every figure drew")
    command = sub.add_parser("compare", help="rerun the comparison chapter and the appendix from the saved results "
                                             "(of your runs; --publish: of the published book)")
    command.add_argument("--publish", action="store_true", help="the published book's, into book/")
    sub.add_parser("models", help="list the model profiles")
    command = sub.add_parser("plan", help="what a run will cost before it starts: texts, tokens, FLOPs, time, memory, disk")
    command.add_argument("--model", default="270m")
    command.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                         help="a chapter parameter (scale, n_topics, stories_per_cell, layers, dtype, ...)")
    command.add_argument("--device", default="auto", help='"auto" (measure this machine), "cpu", "H100" or "RTX 4090"')
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        rest, pairs = pull_parameters(list(sys.argv[1:] if argv is None else argv))
    except EmolibError as error:
        print(f"emolib: error: {error}", file=sys.stderr)
        return 2
    args = _parser().parse_args(rest)
    args.parameter = pairs

    try:
        if args.command == "models":
            from .models.profiles import PROFILES

            for profile in PROFILES.values():
                print(f"{profile.name:16} {profile.n_layers:3} layers  {profile.description}")
            return 0
        if args.command == "extract":
            return _extract(args)
        if args.command == "vectors":
            if len(args.model) > 1 and args.out:
                raise EmolibError("--out takes one --model")
            if args.corpus != "published" and not args.out:
                raise EmolibError(f"book/data/vectors/ holds the published corpus's vectors; give --out for {args.corpus!r}'s")
            from .book import runner as book

            for name in args.model:
                card = book.publish_model_vectors(name, args.corpus, folder=Path(args.out).resolve() if args.out else None)
                print(f"[emolib] {name}: vectors and data card in {card.parent}")
            return 0
        if args.command == "plan":
            return _plan(args)
        if args.command == "corpus":
            return _corpus(args)
        if args.command in ("run", "book"):
            _run(args)
        from .book import runner as book

        if args.command == "browser-check":
            drawn = book.browser_check()
            print(f"[emolib] {sum(drawn.values())} figures drew on {len(drawn)} pages, offline")
            return 0
        if args.command == "compare":
            if args.publish:
                book.run_across(publish=True)
            elif not book.reader_runs():
                raise EmolibError("no runs under runs/book/ to compare; run `make book` first, or pass --publish "
                                  "for the published book's comparison")
            else:
                for folder in book.reader_runs():
                    book.run_across(publish=False, scale=folder.name)
        if args.command in ("book", "build") and not getattr(args, "out", ""):
            book.build(publish=args.publish)
        return 0
    except EmolibError as error:
        print(f"emolib: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> None:
    """Chapters for each model (then, for `book`, the comparison and appendix)."""
    from .book import runner as book
    from .models.profiles import get_profile
    from .steering.sandbox import isolation

    chapters = [c for c in args.chapters.split(",") if c] or list(book.CHAPTERS)
    parameters = typed_parameters(args.parameter, chapters)
    for name in args.model or ():
        get_profile(name)  # an unknown model stops here, with the closest profile named
    started = time.perf_counter()
    model_names = args.model or (["270m"] if args.command == "run" else list(book.EMBEDDED))
    if args.out and len(model_names) > 1:
        raise EmolibError("--out takes one --model")
    if args.out and args.publish:
        raise EmolibError("--out and --publish exclude each other: --publish writes into book/<model>/")
    if "07_steering" in chapters:  # before hours of writing: chapter 7 runs model-written code only when isolated
        isolation()
    book.run_models(model_names, chapters, parameters, out_dir=Path(args.out).resolve() if args.out else None,
                    publish=args.publish)
    if args.command == "book" and not args.out:
        book.run_across(publish=args.publish, scale=book.run_scale(parameters))
    print(f"[emolib] chapters ran in {time.perf_counter() - started:.0f} s")


def _corpus(args: argparse.Namespace) -> int:
    import json

    from . import models
    from .stories import design
    from .writers import generate

    if bool(args.extends) != bool(args.per_cell):
        raise EmolibError("--extends and --per-cell go together (e.g. --extends published --per-cell 8 --emotions deep)")
    writer = generate.LocalWriter(models.load(args.writer, dtype=args.dtype), batch_size=args.batch_size,
                                  token_budget=args.token_budget)
    if args.extends:
        made = design.deepen_corpus(Path(args.out), args.extends, args.emotions, args.per_cell, writer,
                                    batch_size=args.batch_size)
        print(json.dumps({k: v for k, v in made.items() if k != "design"}, default=str))
        return 0
    made = design.write_corpus(Path(args.out), args.scale, writer, emotions=args.emotions, batch_size=args.batch_size)
    print(json.dumps({"stories": {k: v for k, v in made["stories"].items() if k != "rounds"},
                      "rounds": made["stories"]["rounds"], "dialogues": made["dialogues"]}, default=str))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .book import plan
    from .book import runner as book

    parameters = typed_parameters(args.parameter, CHAPTERS)
    book.check_parameters(book.project_root(), list(book.CHAPTERS), parameters)
    rate = plan.measure_cpu_rate() if args.device in ("auto", "cpu") else None
    made = plan.make_plan(args.model, parameters, device=args.device, dtype=parameters.get("dtype") if
                          parameters.get("dtype", "auto") != "auto" else None, rate=rate)
    print(plan.format_plan(made))
    from .book import timings

    measured = timings.read(book.project_root() / "book" / args.model / "timings.json").get(str(parameters.get("scale", "quick")))
    if measured:  # what each chapter took when the published book was made (the appendix's table)
        print("  measured when the published book was made (minutes per chapter): " + ", ".join(
            f"{chapter[:2]} {entry.get('computed_s', entry['last_run_s']) / 60:.1f}" for chapter, entry in measured.items()))
    saved = book.load_results().get(args.model)
    check = plan.check_against_run(args.model, saved.extract if saved else None, rate) if rate and args.model in ("270m", "smollm2") else None
    if check:
        print(f"  check against the published run: its extraction read {check['tokens']:,} tokens in {check['measured_s'] / 60:.1f} min "
              f"({check['tokens_per_second']:,.0f} tokens/s on its machine); this machine's measured rate would have taken "
              f"{check['predicted_s'] / 60:.1f} min, {check['ratio']:.1f}x as long"
              + (" (a busy box, or a slower one)" if check["ratio"] > 1.5 else "")
              + f"; at the published rate this plan's extraction takes ~{made['read_tokens'] / check['tokens_per_second'] / 60:.0f} min")
    return 0


def _extract(args: argparse.Namespace) -> int:
    """One process of a (possibly distributed) extraction; rank 0 merges the manifest at the end."""
    import os

    from . import models
    from .extraction import stages

    device = "auto"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        device = state.device
    layers: object = args.layers
    if layers not in ("default", "all"):
        layers = [int(x) for x in str(layers).split(",")]
    loaded = models.load(args.model, device=device)
    chosen = models.check_layers(loaded.profile, layers)  # type: ignore[arg-type]
    rank = os.environ.get("RANK", "0")
    # every rank extracts its shards (the extraction ends on a barrier); rank 0 then builds and saves the vectors
    run = stages.build_vectors(loaded, args.corpus, chosen, emotions=args.emotions, token_budget=args.token_budget,
                               shard_texts=args.shard_texts, max_emotion_words=args.max_emotion_words, save=rank == "0")
    print(f"[emolib] rank {rank}: {run.stats['shards']} shards ({run.stats['already_done']} already done) in {run.store.folder}"
          + (f"; vectors -> {run.folder}" if rank == "0" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
