"""``kiban generate``: argument parsing, JSON output, exit codes, and a light import."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from kiban.generate import cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kiban")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", *argv])
    assert args.handler is cli.run
    return args.handler(args)


def test_json_output(kiban_model_dir, capsys):
    code = run([str(kiban_model_dir), "--prompt", "The compound <mol>", "--prompt", "Benzene",
                "--n", "2", "--max-new-tokens", "5", "--temperature", "0.8", "--top-p", "0.9",
                "--seed", "3", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"model", "engine", "seconds", "completion_tokens", "completions"}
    assert payload["engine"] == "fast-llama"
    assert [c["prompt"] for c in payload["completions"]] == ["The compound <mol>"] * 2 + ["Benzene"] * 2
    first = payload["completions"][0]
    assert set(first) == {"prompt", "text", "completion", "valid", "spans", "prompt_tokens",
                          "completion_tokens", "stop_reason", "tries"}
    assert first["text"] == first["prompt"] + first["completion"]
    assert first["spans"][0]["modality"] == "mol" and "error" in first["spans"][0]
    assert payload["completion_tokens"] == sum(c["completion_tokens"]
                                               for c in payload["completions"])
    # the same seed gives the same JSON completions
    run([str(kiban_model_dir), "--prompt", "The compound <mol>", "--prompt", "Benzene", "--n", "2",
         "--max-new-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3",
         "--json"])
    again = json.loads(capsys.readouterr().out)
    assert again["completions"] == payload["completions"]


def test_text_output(trained_model_dir, capsys):
    assert run([str(trained_model_dir), "--prompt", "The compound <mol>C", "--max-new-tokens",
                "30"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("--- 0 (")
    assert "The compound <mol>C" in out.out
    assert "tokens in" in out.err and "fast-llama" in out.err


@pytest.mark.parametrize("argv, message", [
    (["--temperature", "-1"], "'temperature' parameter must be a number >= 0. Got -1.0"),
    (["--top-p", "0"], "'top_p' parameter must be a number in (0, 1]. Got 0.0"),
    (["--n", "0"], "'n' parameter must be an integer >= 1. Got 0"),
    (["--max-new-tokens", "0"], "'max_new_tokens' parameter must be an integer >= 1. Got 0"),
    (["--device", "gpu0"], "'device' parameter must name a torch device such as 'cpu' or "
                           "'cuda:0'. Got 'gpu0'"),
])
def test_bad_parameters_exit_2(kiban_model_dir, capsys, argv, message):
    assert run([str(kiban_model_dir), "--prompt", "x", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiban generate: error: ") and message in err


def test_missing_model_exits_2(tmp_path, capsys):
    assert run([str(tmp_path), "--prompt", "x"]) == 2
    assert f"{tmp_path / 'config.json'} is missing" in capsys.readouterr().err


def test_valid_only_failure_exits_1(kiban_model_dir, capsys):
    code = run([str(kiban_model_dir), "--prompt", "<mol>", "--max-new-tokens", "3",
                "--temperature", "1", "--seed", "0", "--valid-only", "--max-tries", "2", "--json"])
    assert code == 1
    payload = json.loads(capsys.readouterr().out)
    assert [(c["valid"], c["tries"]) for c in payload["completions"]] == [(False, 2)]


def test_parser_does_not_import_torch():
    code = ("import argparse, sys; from kiban.generate import cli; "
            "p = argparse.ArgumentParser(); cli.add_parser(p.add_subparsers()); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
