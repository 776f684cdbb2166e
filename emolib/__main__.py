"""Command line: `python -m emolib {book,run,build,models}`.

    python -m emolib book                      # run every chapter for the embedded model, then build
    python -m emolib run --model 31b -p n_topics 100 -p writer_url http://127.0.0.1:8000/v1
    python -m emolib build                     # re-render whatever chapters are executed
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from .errors import EmolibError


def _parameter(text: str) -> object:
    """papermill-style values: numbers, booleans, lists parse as Python literals; anything else is a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emolib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "book"):
        command = sub.add_parser(name, help="run chapters with papermill" + (" and build the book" if name == "book" else ""))
        command.add_argument("--model", action="append", help="analysed model profile (repeatable); default 270m")
        command.add_argument("--chapters", default="", help="comma-separated chapter names; default all")
        command.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                             help="a notebook parameter, as with papermill -p")
        command.add_argument("--out", default="", help="write executed chapters here instead of book/<model>/")
    sub.add_parser("build", help="build the HTML book from executed chapters (no execution)")
    sub.add_parser("models", help="list the model profiles")
    args = parser.parse_args(argv)

    from . import book

    try:
        if args.command == "models":
            from .models import PROFILES

            for profile in PROFILES.values():
                print(f"{profile.name:16} {profile.n_layers:3} layers  {profile.description}")
            return 0
        if args.command in ("run", "book"):
            chapters = [c for c in args.chapters.split(",") if c] or list(book.CHAPTERS)
            parameters = {name: _parameter(value) for name, value in args.parameter}
            started = time.perf_counter()
            models = args.model or ["270m"]
            if args.out and len(models) > 1:
                raise EmolibError("--out takes one --model")
            for model in models:
                book.run_chapters(model, chapters, parameters, out_dir=Path(args.out).resolve() if args.out else None)
            print(f"[emolib] chapters ran in {time.perf_counter() - started:.0f} s")
        if args.command in ("book", "build"):
            book.build()
        return 0
    except EmolibError as error:
        print(f"emolib: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
