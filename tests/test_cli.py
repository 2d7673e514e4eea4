"""The `hnas` command line: each subcommand end to end, and exit codes for bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import isotropic_plan
from hnas.cli import main
from hnas.grammar import default_architecture, load_grammar, parse


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.json"
    isotropic_plan(5, patch=64, base=8, top=64).save(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [[], ["sample", "-n", "0"], ["sample", "--uniform", "--confidence", "high"],
                                  ["grammar", "--max-stages", "x"], ["show"], ["plan", "--dims", "4"],
                                  ["frobnicate"]])
def test_bad_arguments_exit_2_with_usage(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: hnas" in capsys.readouterr().err


def test_grammar_to_file_builds_with_lalr(capsys, tmp_path, plan_file):
    out_file = tmp_path / "g.lark"
    code, out, _ = run(capsys, "grammar", "--plan", plan_file, "--max-stages", 4, "-o", out_file)
    assert code == 0 and "4 stages" in out
    load_grammar(out_file.read_text())
    code, out, _ = run(capsys, "grammar", "--plan", plan_file, "--extended")
    assert "res_decoder" in out and "enc_pool" in out


def test_stored_plan_cannot_grow(capsys, plan_file):
    code, _, err = run(capsys, "grammar", "--plan", plan_file, "--max-stages", 7)
    assert code == 1 and "--max-stages 7 exceeds the 5 stages" in err


def test_sample_is_deterministic_and_grammatical(capsys, tmp_path, plan_file):
    grammar_file = tmp_path / "g.lark"
    run(capsys, "grammar", "--plan", plan_file, "-o", grammar_file)
    grammar = grammar_file.read_text()
    _, first, _ = run(capsys, "sample", "--grammar", grammar_file, "-n", 6, "--seed", 3)
    _, again, _ = run(capsys, "sample", "--grammar", grammar_file, "-n", 6, "--seed", 3)
    _, uniform, _ = run(capsys, "sample", "--grammar", grammar_file, "-n", 6, "--uniform", "--seed", 3)
    assert first == again and first != uniform
    for line in (first + uniform).splitlines():
        parse(grammar, line)
    assert len(first.splitlines()) == 6


def test_sample_refuses_two_grammar_sources(capsys, tmp_path, plan_file):
    code, _, err = run(capsys, "sample", "--grammar", tmp_path / "g.lark", "--plan", plan_file)
    assert code == 1 and "not both" in err


def test_show_default_prints_tree_table_and_cost(capsys, tmp_path, plan_file):
    code, out, _ = run(capsys, "show", "default", "--plan", plan_file, "--render", tmp_path / "t.svg")
    assert code == 0
    assert "enc_norm = instance_norm" in out and "parameters" in out and "GFLOP" in out
    assert "encoder  4" in out  # 5-stage table
    written = [p.name for p in tmp_path.iterdir()]
    if shutil.which("dot"):
        assert {"t.svg", "t_full.svg", "t_network.svg"} <= set(written)  # compact tree, full tree, network
    else:
        assert {"t.txt", "t_network.txt"} <= set(written)


def test_show_bad_architecture_names_the_word(capsys, plan_file):
    text = default_architecture(isotropic_plan(5)).replace("leaky_relu", "swish", 1)
    code, _, err = run(capsys, "show", text, "--plan", plan_file)
    assert code == 1 and "unknown word 'swish' at position 3" in err


def test_plan_of_a_dataset_folder(capsys, tmp_path):
    from hnas.data import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", n_cases=4, shape=(24, 32, 28), seed=0)
    code, out, _ = run(capsys, "plan", root, "-o", tmp_path / "plan.json")
    assert code == 0 and "patch size" in out and (tmp_path / "plan.json").is_file()
    code, _, err = run(capsys, "plan", root, "--max-stages", 9)
    assert code == 1 and "--max-stages 9" in err


def test_plan_of_the_real_hippocampus(capsys, hippocampus_dir):
    code, out, _ = run(capsys, "plan", hippocampus_dir)
    assert code == 0
    assert re.search(r"^patch size\s+40x56x40$", out, re.M)
    assert re.search(r"^stages\s+4$", out, re.M)


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "hnas.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "grammar" in result.stdout and "sample" in result.stdout


@pytest.mark.parametrize("error, expected", [
    (IsADirectoryError(21, "Is a directory", "/r/cv/x.json"), "'/r/cv/x.json': Is a directory; expected a file"),
    (NotADirectoryError(20, "Not a directory", "/r/cv"), "'/r/cv': Not a directory; expected a folder"),
    (PermissionError(13, "Permission denied", "/r/a", None, "/r/b"), "'/r/a' and '/r/b': Permission denied"),
])
def test_a_file_system_refusal_is_one_line_naming_the_path(monkeypatch, capsys, error, expected):
    import hnas.pipeline.status

    def refuse(run):
        raise error

    monkeypatch.setattr(hnas.pipeline.status, "status_text", refuse)
    assert main(["status", "/r"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hnas: error: {expected}") and err.count("\n") == 1 and "Traceback" not in err


def test_an_os_error_without_a_path_is_not_hidden(monkeypatch):
    import hnas.pipeline.status

    def fail(run):
        raise OSError("device lost")

    monkeypatch.setattr(hnas.pipeline.status, "status_text", fail)
    with pytest.raises(OSError, match="device lost"):
        main(["status", "/r"])
