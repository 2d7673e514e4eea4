"""`make demo`'s pieces that run in seconds: the default-vs-incumbent lines. (The demo itself takes
minutes: README 'Quick start' has its numbers; its progress bar is tested in tests/pipeline/test_progress.py.)"""

from __future__ import annotations

from hnas.demo import default_vs_incumbent
from hnas.pipeline.spaces import make_space
from hnas.search import run


def _objective(context) -> dict:
    """The default learning rate (1e-2) loses to larger ones, so the search beats it."""
    loss = 0.5 - 0.05 * (context.config["initial_lr"] * 100) ** 0.5 + 0.1 / context.fidelity
    return {"loss": min(max(loss, 0.01), 0.99), "cost": float(context.fidelity)}


def test_default_and_incumbent_dice_are_shown_side_by_side(tmp_path):
    run(_objective, make_space("hpo"), optimizer="priorband", max_trials=12, min_fidelity=1, max_fidelity=9, eta=3,
        run_dir=tmp_path, seed=0)
    text = default_vs_incumbent(tmp_path)

    default_line, incumbent_line, fastest_line = text.splitlines()[1:]
    assert default_line.split()[:3] == ["nnU-Net", "default", "0.539"]  # trial 0: lr 1e-2 at 9 epochs
    assert "(trial 0, 9 epochs" in default_line
    assert incumbent_line.split()[0] == "incumbent" and float(incumbent_line.split()[1]) >= 0.539
    # cost = epochs here: a larger learning rate is as good as the default after fewer epochs
    assert fastest_line.split()[:6] == ["fastest", "within", "0.01", "of", "the", "default"]
    dice, epochs = float(fastest_line.split()[6]), int(fastest_line.split("epochs")[0].split()[-1])
    assert dice >= 0.539 - 0.01 and epochs < 9


def test_no_fastest_line_when_nothing_close_to_the_default_is_cheaper(tmp_path):
    def default_is_best_and_cheapest(context) -> dict:
        default = context.config["initial_lr"] == make_space("hpo").default_config()["initial_lr"]
        return {"loss": 0.2 if default else 0.8, "cost": 1.0 if default else 5.0}

    run(default_is_best_and_cheapest, make_space("hpo"), optimizer="priorband", max_trials=6, min_fidelity=1,
        max_fidelity=9, eta=3, run_dir=tmp_path, seed=0)
    lines = default_vs_incumbent(tmp_path).splitlines()
    assert len(lines) == 3 and "fastest" not in "\n".join(lines)


def test_the_readme_quotes_the_demo_in_the_format_it_prints_today():
    """README's demo figures are the last `make demo`'s own lines: a changed format (or hand-edited
    figures that no longer parse) breaks this test, so the README is updated from a fresh run."""
    import re
    from pathlib import Path

    from hnas.demo import DICE_TOLERANCE

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- make demo output -->\n```text\n(.*?)```", readme, re.S)
    assert block, "README.md lacks the quoted `make demo` output (<!-- make demo output --> + a text fence)"
    lines = block.group(1).splitlines()
    assert lines[0] == "validation Dice (mean of the foreground labels):"
    names = ["nnU-Net default", "incumbent", f"fastest within {DICE_TOLERANCE:g} of the default"]
    row = r"  (?P<name>.+?) +(?P<dice>0\.\d{3})  \(trial (?P<trial>\d+), (?P<epochs>\d+) epochs, (?P<s>\d+) s training\)"
    rows = [re.fullmatch(row, line) for line in lines[1:] if line.startswith("  ")]
    assert rows and all(rows), f"a README demo line is not in default_vs_incumbent's format: {lines[1:]}"
    assert [r["name"] for r in rows] == names[:len(rows)]
    assert re.fullmatch(r"demo finished in \d+ s; outputs in demo-output/", lines[-1])
