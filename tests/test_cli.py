"""The one CLI convention across the corpus, index and search commands: a user's mistake exits 2
and a failed run 1, each with one ``kiban <cmd>: error: <message>`` line and no traceback; the
version and the modality choices come from the code."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from kiban.cli import build_parser, main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "corpus-v2"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(128, 256))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A private copy of the committed version-2 corpus (indexed)."""
    copy = tmp_path / "corpus"
    shutil.copytree(FIXTURE, copy)
    return copy


@pytest.fixture
def source(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"Salt {i} dissolves in water."}) + "\n" for i in range(3)),
        encoding="utf-8",
    )
    return path


def one_error_line(err: str, prog: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{prog}: error: "), err
    return err[len(f"{prog}: error: ") :].rstrip("\n")


def test_version_comes_from_the_package_metadata(kiban, capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"kiban {metadata.version('kiban')}\n"


def test_modality_choices_come_from_the_codec_registry():
    from kiban.document import MODALITY_TAGS
    from kiban.modalities import codec_names

    parser = build_parser()
    search = parser._subparsers._group_actions[0].choices["search"]
    count = search._subparsers._group_actions[0].choices["count"]
    modality = next(a for a in count._actions if a.dest == "modality")
    assert modality.choices == [n for n in codec_names() if n in MODALITY_TAGS]
    assert sorted(modality.choices) == ["crystal", "mol", "num", "protein"]


@pytest.mark.parametrize(
    "argv",
    [
        ["corpus", "build", "SRC", "--out", "OUT", "--workers", "2"],
        ["index", "build", "CORPUS", "--workers", "2"],
    ],
)
def test_workers_on_the_commands_that_use_them(argv):
    args = build_parser().parse_args(argv)
    assert args.workers == 2


@pytest.mark.parametrize(
    ("argv", "prog", "message"),
    [
        (
            ["corpus", "build", "docs.jsonl", "--out", "docs.jsonl"],
            "kiban corpus build",
            "--out docs.jsonl is a file, not a directory",
        ),
        (
            ["corpus", "build", "docs.jsonl", "--out", "out", "--workers", "0"],
            "kiban corpus build",
            "workers must be >= 1, got 0",
        ),
        (
            ["corpus", "build", ".", "--out", "out"],
            "kiban corpus build",
            "source . is a directory, not a file: name the files in it (e.g. ./*.jsonl)",
        ),
        (
            ["corpus", "info", "docs.jsonl"],
            "kiban corpus info",
            "docs.jsonl is not a built kiban corpus: it is a file",
        ),
        (
            ["index", "build", "nowhere"],
            "kiban index build",
            "nowhere/manifest.json is missing: nowhere is not a built kiban corpus",
        ),
    ],
)
def test_input_errors_exit_2(kiban, source, argv, prog, message):
    code, out, err = kiban(*argv)
    assert (code, out) == (2, "")
    assert one_error_line(err, prog) == message


def test_an_out_below_a_file_exits_2(kiban, source):
    code, out, err = kiban("corpus", "build", "docs.jsonl", "--out", "docs.jsonl/corpus")
    assert (code, out) == (2, "")
    assert (
        one_error_line(err, "kiban corpus build")
        == "--out docs.jsonl/corpus: docs.jsonl is a file, not a directory"
    )


def test_an_unwritable_out_exits_2(kiban, source, tmp_path, monkeypatch):
    # root may write anywhere: the operating system's refusal is simulated where it is raised
    original = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name == ".work":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, out, err = kiban("corpus", "build", "docs.jsonl", "--out", "locked")
    assert (code, out) == (2, "")
    assert one_error_line(err, "kiban corpus build") == "Permission denied: locked/.work"


def test_a_full_disk_exits_1_and_says_so(kiban, source, monkeypatch):
    from kiban.corpus import build

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with monkeypatch.context() as patch:
        patch.setattr(build, "atomic_write_bytes", full)
        code, out, err = kiban(
            "corpus", "build", "docs.jsonl", "--out", "out", "--vocab-size", "300"
        )
    assert (code, out) == (1, "")
    assert one_error_line(err, "kiban corpus build") == (
        "No space left on device (free some space, or write elsewhere; the job resumes from what "
        "was kept): out/shards/tokens-000000.bin"
    )
    code, out, err = kiban(
        "corpus", "build", "docs.jsonl", "--out", "out", "--vocab-size", "300", "--json"
    )  # space freed: the same command resumes and finishes
    assert code == 0, err
    assert json.loads(out)["documents"] == 3


def test_a_full_disk_while_indexing_exits_1(kiban, corpus, monkeypatch):
    from kiban.index import build as index_build

    shutil.rmtree(corpus / "index")

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(index_build, "atomic_open", full)
    code, out, err = kiban("index", "build", corpus)
    assert (code, out) == (1, "")
    assert one_error_line(err, "kiban index build").startswith("No space left on device (free ")


def test_binary_inputs_exit_2(kiban, corpus, source, tmp_path):
    (tmp_path / "image.jsonl").write_bytes(PNG)
    code, out, err = kiban("corpus", "build", "image.jsonl", "--out", "out", "--vocab-size", "300")
    assert (code, out) == (2, "")
    # the reasons first (a summary of rejects.jsonl), then the one error line
    *summary, last = err.splitlines()
    assert summary[0] == "3 records rejected; the most common reasons:"
    assert summary[1].split() == ["2", "not", "valid", "UTF-8:", "byte", "0x…", "at", "column", "N"]
    assert one_error_line(last + "\n", "kiban corpus build").startswith(
        "nothing could be built: all 3 records were rejected or dropped (3 rejected, 0 dropped)"
    )
    (tmp_path / "queries.txt").write_bytes(PNG)
    code, out, err = kiban("search", "count", corpus, "--file", "queries.txt")
    assert (code, out) == (2, "")
    assert one_error_line(err, "kiban search count") == (
        "not a text file in UTF-8 (invalid start byte at byte 0); is it a binary file?"
    )
    code, out, err = kiban("search", "contamination", corpus, "image.jsonl")
    assert (code, out) == (2, "")
    assert one_error_line(err, "kiban search contamination") == (
        "image.jsonl:1: unreadable evaluation item: not valid UTF-8: byte 0x89 at column 1 (pass "
        "--skip-unreadable to report such items and go on)"
    )


def test_a_damaged_corpus_exits_2_on_every_command(kiban, corpus):
    path = corpus / "shards" / "tokens-000001.bin"
    data = bytearray(path.read_bytes())
    data[4] ^= 0xFF
    path.write_bytes(bytes(data))
    for argv, prog in (
        (["search", "count", corpus, " boils"], "kiban search count"),
        (
            ["search", "contamination", corpus, FIXTURE.parent / "docs.jsonl"],
            "kiban search contamination",
        ),
        (["index", "build", corpus], "kiban index build"),
        (["corpus", "verify", corpus], "kiban corpus verify"),
    ):
        code, out, err = kiban(*argv)
        assert (code, out) == (2, ""), argv
        assert "tokens-000001.bin: sha256 " in one_error_line(err, prog)
