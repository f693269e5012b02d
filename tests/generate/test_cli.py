"""``kiban generate``: argument parsing, JSON output, exit codes, and a light import."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from kiban.generate import cli


def run(argv: list[str]) -> int:
    """The exit status ``kiban generate ARGV`` gives (the handler under the one CLI runner)."""
    from kiban._cli import run_command

    parser = argparse.ArgumentParser(prog="kiban")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", *argv])
    assert args.handler is cli.run
    return run_command("kiban generate", args.handler, args)


def test_json_output(kiban_model_dir, capsys):
    code = run(
        [
            str(kiban_model_dir),
            "--prompt",
            "The compound <mol>",
            "--prompt",
            "Benzene",
            "--n",
            "2",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--seed",
            "3",
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {
        "model",
        "engine",
        "temperature",
        "seconds",
        "completion_tokens",
        "completions",
    }
    assert (payload["engine"], payload["temperature"]) == ("fast-llama", 0.8)
    assert [c["prompt"] for c in payload["completions"]] == ["The compound <mol>"] * 2 + [
        "Benzene"
    ] * 2
    first = payload["completions"][0]
    assert set(first) == {
        "prompt",
        "text",
        "completion",
        "valid",
        "spans",
        "prompt_tokens",
        "completion_tokens",
        "stop_reason",
        "tries",
    }
    assert first["text"] == first["prompt"] + first["completion"]
    assert first["spans"][0]["modality"] == "mol" and "error" in first["spans"][0]
    assert payload["completion_tokens"] == sum(
        c["completion_tokens"] for c in payload["completions"]
    )
    # the same seed gives the same JSON completions
    run(
        [
            str(kiban_model_dir),
            "--prompt",
            "The compound <mol>",
            "--prompt",
            "Benzene",
            "--n",
            "2",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--seed",
            "3",
            "--json",
        ]
    )
    again = json.loads(capsys.readouterr().out)
    assert again["completions"] == payload["completions"]


def test_text_output(trained_model_dir, capsys):
    assert (
        run([str(trained_model_dir), "--prompt", "The compound <mol>C", "--max-new-tokens", "30"])
        == 0
    )
    out = capsys.readouterr()
    assert out.out.startswith("--- 0 (")
    assert "The compound <mol>C" in out.out
    assert "tokens in" in out.err and "fast-llama" in out.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--temperature", "-1"], "'temperature' parameter must be a finite number >= 0. Got -1.0"),
        (["--temperature", "inf"], "'temperature' parameter must be a finite number >= 0. Got inf"),
        (["--temperature", "nan"], "'temperature' parameter must be a finite number >= 0. Got nan"),
        (["--top-p", "0"], "'top_p' parameter must be a number in (0, 1]. Got 0.0"),
        (["--top-p", "1.5"], "'top_p' parameter must be a number in (0, 1]. Got 1.5"),
        (["--top-p", "nan"], "'top_p' parameter must be a number in (0, 1]. Got nan"),
        (["--n", "0"], "'n' parameter must be an integer >= 1. Got 0"),
        (["--max-new-tokens", "0"], "'max_new_tokens' parameter must be an integer >= 1. Got 0"),
        (
            ["--device", "gpu0"],
            "'device' parameter must name a torch device such as 'cpu' or 'cuda:0'. Got 'gpu0'",
        ),
    ],
)
def test_bad_parameters_exit_2(kiban_model_dir, capsys, argv, message):
    assert run([str(kiban_model_dir), "--prompt", "x", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiban generate: error: ") and message in err


def test_several_completions_are_sampled_unless_temperature_0_is_asked_for(kiban_model_dir, capsys):
    argv = [
        str(kiban_model_dir),
        "--prompt",
        "Benzene",
        "--n",
        "4",
        "--max-new-tokens",
        "6",
        "--seed",
        "1",
        "--json",
        "--no-constrain",
    ]
    assert run(argv) == 0
    sampled = json.loads(capsys.readouterr().out)
    assert sampled["temperature"] == 1.0
    assert len({c["completion"] for c in sampled["completions"]}) > 1
    assert run([*argv, "--temperature", "0"]) == 0  # explicit: n identical greedy copies
    greedy = json.loads(capsys.readouterr().out)
    assert greedy["temperature"] == 0.0
    assert len({c["completion"] for c in greedy["completions"]}) == 1
    assert run([*argv[:4], "1", *argv[5:]]) == 0  # one completion: greedy by default
    assert json.loads(capsys.readouterr().out)["temperature"] == 0.0


def test_help_says_what_temperature_0_with_several_completions_does(capsys):
    with pytest.raises(SystemExit):
        run(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "Default: 0 for --n 1, 1 for --n > 1 (--temperature 0 with --n > 1 gives N "
        "identical copies)" in text
    )
    assert "MODEL_DIR|RUN_DIR" in text


def test_a_training_run_directory_generates_from_its_final_model(kiban_model_dir, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(kiban_model_dir, run_dir / "model")
    (run_dir / "checkpoints" / "step-00000004").mkdir(parents=True)
    # what `kiban train` writes beside them: the run's own config.json and run.json
    (run_dir / "config.json").write_text('{"model": {"preset": "llama-1m"}}', encoding="utf-8")
    (run_dir / "run.json").write_text("{}", encoding="utf-8")
    assert run([str(run_dir), "--prompt", "Benzene", "--max-new-tokens", "3", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["model"] == str(run_dir / "model")
    assert out.err.startswith(
        f"kiban generate: {run_dir} is a training run: using its final model {run_dir / 'model'}\n"
    )


def test_a_run_without_a_final_model_names_its_newest_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    for step in ("step-00000004", "step-00000008", "step-00000012.tmp"):
        (run_dir / "checkpoints" / step).mkdir(parents=True)
    assert run([str(run_dir), "--prompt", "x"]) == 2
    assert capsys.readouterr().err == (
        f"kiban generate: error: {run_dir} is a training run without a final model yet "
        f"({run_dir / 'model'} is missing; its newest checkpoint is "
        f"{run_dir / 'checkpoints' / 'step-00000008'}): wait for the run to finish, or stop it "
        "with Ctrl-C (it saves the model of the step it stopped at), or resume it with "
        "`kiban train CONFIG --resume`\n"
    )


def test_missing_model_exits_2(tmp_path, capsys):
    assert run([str(tmp_path), "--prompt", "x"]) == 2
    assert f"{tmp_path / 'config.json'} is missing" in capsys.readouterr().err


def test_valid_only_failure_exits_1(kiban_model_dir, capsys):
    code = run(
        [
            str(kiban_model_dir),
            "--prompt",
            "<mol>",
            "--max-new-tokens",
            "3",
            "--temperature",
            "1",
            "--seed",
            "0",
            "--valid-only",
            "--max-tries",
            "2",
            "--json",
        ]
    )
    assert code == 1
    payload = json.loads(capsys.readouterr().out)
    assert [(c["valid"], c["tries"]) for c in payload["completions"]] == [(False, 2)]


def test_parser_does_not_import_torch():
    code = (
        "import argparse, sys; from kiban.generate import cli; "
        "p = argparse.ArgumentParser(); cli.add_parser(p.add_subparsers()); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- --out samples.smi ---------------------------------------------------------------------------
def _sample(model_dir, out, *flags: str) -> dict:
    """Run `kiban generate --out OUT --json` on 24 sampled molecules; the printed payload."""
    return [
        str(model_dir),
        "--prompt",
        "The compound <mol>",
        "--n",
        "24",
        "--max-new-tokens",
        "30",
        "--seed",
        "0",
        "--out",
        str(out),
        "--json",
        *flags,
    ]


def _expected_lines(payload: dict, *, unique: bool, min_heavy_atoms: int | None) -> list[str]:
    """What the .smi file must hold, computed from the JSON spans with RDKit alone."""
    from rdkit import Chem

    lines: list[str] = []
    for completion in payload["completions"]:
        for span in completion["spans"]:
            if span["modality"] != "mol" or "error" in span:
                continue
            mol = Chem.MolFromSmiles(span["text"])
            assert mol is not None
            if min_heavy_atoms is not None and mol.GetNumHeavyAtoms() < min_heavy_atoms:
                continue
            smiles = Chem.MolToSmiles(mol)
            if not (unique and smiles in lines):
                lines.append(smiles)
    return lines


def test_out_writes_the_canonical_smiles_of_valid_mol_spans(trained_model_dir, tmp_path, capsys):
    out = tmp_path / "samples.smi"
    assert run(_sample(trained_model_dir, out)) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    lines = out.read_text().splitlines()
    assert lines == _expected_lines(payload, unique=False, min_heavy_atoms=None)
    spans = [s for c in payload["completions"] for s in c["spans"] if s["modality"] == "mol"]
    invalid = sum("error" in s for s in spans)
    # the trained model writes both kinds, so the filter is exercised
    assert len(spans) == 24 and 0 < invalid < 24
    assert payload["out"] == {
        "path": str(out),
        "completions": 24,
        "generated": 24,
        "valid": 24 - invalid,
        "written": 24 - invalid,
        "dropped": {"invalid": invalid},
    }
    assert len(lines) == 24 - invalid and len(set(lines)) < len(lines)  # repeats kept
    assert (
        f"kiban generate: generated 24 <mol> spans in 24 completions, valid {24 - invalid}, "
        f"written {24 - invalid} to {out} (dropped: {invalid} invalid)"
    ) in captured.err


def test_out_unique_and_min_heavy_atoms(trained_model_dir, tmp_path, capsys):
    from rdkit import Chem

    out = tmp_path / "samples.smi"
    assert run(_sample(trained_model_dir, out, "--unique", "--min-heavy-atoms", "6")) == 0
    payload = json.loads(capsys.readouterr().out)
    lines = out.read_text().splitlines()
    assert lines == _expected_lines(payload, unique=True, min_heavy_atoms=6)
    assert len(set(lines)) == len(lines)
    assert all(Chem.MolFromSmiles(s).GetNumHeavyAtoms() >= 6 for s in lines)
    counts = payload["out"]
    assert counts["dropped"]["fewer_heavy_atoms"] > 0 and counts["dropped"]["duplicate"] > 0
    assert counts["valid"] - counts["dropped"]["fewer_heavy_atoms"] - counts["dropped"][
        "duplicate"
    ] == len(lines)


def test_out_of_a_prompt_without_mol_spans_exits_2_and_writes_nothing(
    kiban_model_dir, tmp_path, capsys
):
    out = tmp_path / "samples.smi"
    argv = [str(kiban_model_dir), "--prompt", "Benzene", "--max-new-tokens", "3"]
    assert run([*argv, "--no-constrain", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 completions of prompt(s) ['Benzene'] has a <mol> span" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--unique"], "--unique filters the molecules --out writes; add --out FILE.smi"),
        (["--min-heavy-atoms", "3"], "--min-heavy-atoms filters the molecules --out writes"),
        (["--out", "x.smi", "--min-heavy-atoms", "0"], "--min-heavy-atoms must be an integer >= 1"),
        (["--out", "no/such/dir/x.smi"], "the directory no/such/dir does not exist"),
    ],
)
def test_bad_out_options_exit_2(kiban_model_dir, capsys, flags, message):
    assert run([str(kiban_model_dir), "--prompt", "<mol>", *flags]) == 2
    assert message in capsys.readouterr().err
