"""`kiban` command line: the top-level parser, which mounts each package's subcommands (its
``cli.py``: thin wrappers that parse, call one library function, and print), and `main`, which
runs the chosen handler through `kiban._cli.run_command` (input errors exit 2, runtime failures
1, one ``kiban <cmd>: error:`` line each).

Heavy libraries (RDKit, pymatgen, torch, tokenizers) are imported inside the commands that need
them, so ``kiban --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys


def _version() -> str:
    """``kiban X.Y.Z`` from the installed package's metadata (the source tree's pyproject when
    kiban runs uninstalled from a checkout)."""
    from importlib import metadata

    try:
        return f"kiban {metadata.version('kiban')}"
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return f"kiban {tomllib.loads(pyproject.read_text())['project']['version']}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiban",
        description="Transparent scientific "
        "foundation models: corpora, search, models, tasks, lab.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from kiban.corpus.cli import add_parsers as add_corpus
    from kiban.index.cli import add_parsers as add_index_and_search

    add_corpus(commands)
    add_index_and_search(commands)
    from kiban.train.cli import add_parsers as add_training

    add_training(commands)
    from kiban.generate.cli import add_parser as add_generate

    add_generate(commands)
    from kiban.tasks.cli import add_parser as add_eval
    from kiban.tasks.cli import add_report_parser

    add_eval(commands)
    add_report_parser(commands)
    from kiban.tasks.property_cli import add_parser as add_property

    add_property(commands)
    from kiban.tasks.design_cli import add_parser as add_design

    add_design(commands)
    from kiban.lab.cli import add_parser as add_lab

    add_lab(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # queries may come after options (`--modality mol CCO c1ccccc1`), which argparse leaves
        # unparsed when a '*' positional came before the options
        if getattr(args, "query", None) is not None and not any(e.startswith("--") for e in extra):
            args.query = list(args.query) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from kiban._cli import run_command

    return run_command(_prog(args), args.handler, args)


def _prog(args: argparse.Namespace) -> str:
    """``kiban corpus build``: the words the user typed to reach the handler."""
    words = ["kiban", args.command]
    for name, value in vars(args).items():
        if name.endswith("_command") and name != "command" and isinstance(value, str):
            words.append(value)
    return " ".join(words)


if __name__ == "__main__":
    sys.exit(main())
