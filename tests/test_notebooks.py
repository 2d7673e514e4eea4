"""Every notebook in notebooks/ runs top to bottom without errors, and its key cells print what the text
around them says (seeded: the synthetic data, the searches and the samplers are deterministic).

Each notebook has a check below; a new notebook without one fails the test. Cells are found by a
snippet of their source, so editing a notebook's prose or reordering its cells does not break the checks.
Expected values are derived by hand from nnU-Net's rules and docs/references.md where they can be
(plans, grammar size, network shapes), otherwise they are the invariants the notebook's text promises.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _cell(notebook, snippet: str):
    cells = [c for c in notebook.cells if c.cell_type == "code" and snippet in c.source]
    assert len(cells) == 1, f"{len(cells)} code cells contain {snippet!r}; expected exactly one"
    return cells[0]


def stdout(notebook, snippet: str) -> str:
    """What the code cell containing ``snippet`` printed."""
    return "".join(o.get("text", "") for o in _cell(notebook, snippet).get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def shown(notebook, snippet: str) -> list[str]:
    """The MIME types the cell displayed or returned (images, tables, markdown)."""
    return [mime for o in _cell(notebook, snippet).get("outputs", [])
            if o.get("output_type") in ("display_data", "execute_result") for mime in o.get("data", {})]


def lines_matching(text: str, pattern: str) -> list[re.Match]:
    return [m for m in (re.fullmatch(pattern, line) for line in text.splitlines()) if m]


# ---------------------------------------------------------------- per notebook

DEFAULT_4_STAGES = ("unet conv_encoder instance_norm leaky_relu no_dropout 2b down 2b down 2b down 2b "
                    "conv_decoder instance_norm leaky_relu no_dropout up 2b up 2b up 2b")


def check_grammar_and_derivations(nb):
    assert stdout(nb, "validate_dataset(load_dataset(root))").strip() == (
        "Dataset900_SyntheticBrain 4 cases, channels ('MRI',) labels "
        "(('background', 0), ('organ', 1), ('substructure', 2))")
    # nnU-Net's planner on four 48x64x56 cases at 1 mm: the patch is the median shape (a multiple of 2**3);
    # an axis pools while it is >= 8 voxels: 48 -> 24 -> 12 -> 6, three poolings, 4 stages; features
    # min(64, 8 * 2**i); batch: the 5% cap (4 cases * 0.05 = 0.2 patches) is below the floor of 2.
    plan = stdout(nb, "plan = make_plan(fingerprint")
    assert "patch (48, 64, 56) stages 4 strides ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))" in plan
    assert "features (8, 16, 32, 64) batch 2" in plan
    grammar = stdout(nb, "grammar = make_grammar(plan)").splitlines()
    assert grammar[0].startswith("// hnas HNAS grammar") and "4 stages, 3D" in grammar[0]
    assert grammar[1].startswith("3.71e+07 architectures")  # docs/references.md: about 3.7e7 for N=4
    assert grammar[2] == DEFAULT_4_STAGES  # nnU-Net's default: 2 convs per stage, 4 stages
    samples = lines_matching(stdout(nb, "PriorSampler(prior)"), r"(prior|uniform)\s+log p =\s+(-[\d.]+)  (unet .*)")
    assert [m[1] for m in samples] == ["prior", "prior", "uniform", "uniform"]
    assert all(float(m[2]) < 0 for m in samples)
    derived = dict(line.split(" : ", 1) for line in stdout(nb, "mutate(default_tree").splitlines())
    assert derived["default"] == DEFAULT_4_STAGES
    assert derived["mutated"].startswith("unet ") and derived["mutated"] != DEFAULT_4_STAGES  # mutate changes it
    assert derived["crossed"].startswith("unet ")
    table = stdout(nb, "network_text(spec, plan.patch_size)")
    assert re.search(r"^encoder\s+0\s.*\s48x64x56$", table, re.M)
    assert re.search(r"^decoder\s+0\s.*\s48x64x56$", table, re.M)
    assert re.search(r"^encoder\s+3\s.*\s6x8x7$", table, re.M)  # three poolings of 48x64x56
    built = stdout(nb, "network = build(spec)")
    assert re.search(r"^[\d,]+ parameters, [\d.]+ GFLOP per patch$", built, re.M)
    # deep supervision: one output per decoder stage, 3 classes, full resolution first
    assert "deep-supervision outputs: [(1, 3, 48, 64, 56), (1, 3, 24, 32, 28), (1, 3, 12, 16, 14)]" in built


def check_search_walkthrough(nb):
    log = stdout(nb, "summary = search(settings, run_dir")
    assert "scale preset 'cpu'" in log
    assert "search: space hpo+hnas, optimizer regularized-priorband, epochs 1..3 (eta 3), budget 5 trials" in log
    assert "5 trials finished, 0 failed" in log and "## Incumbent" in log and "## Pareto front" in log
    listing = stdout(nb, "sorted(p.name for p in run_dir.iterdir())")
    for name in ("'grammar.lark'", "'plan.json'", "'run.json'", "'search.sqlite'", "'trials'"):
        assert name in listing.splitlines()[0]
    trials = lines_matching(listing, r"trial (\d): success (\d) epochs, sampler (\w+)\s+Dice (0\.\d+), [\d.]+ s")
    assert [int(m[1]) for m in trials] == [0, 1, 2, 3, 4]
    # docs/references.md, PriorBand: the default configuration is evaluated first, at the maximum budget
    assert (trials[0][2], trials[0][3]) == ("3", "default")
    assert [m[2] for m in trials[1:4]] == ["1", "1", "1"]  # the first bracket starts at the lowest rung
    report = stdout(nb, "write_report([run_dir]").splitlines()
    assert report[0].endswith("report/index.html")
    assert all(f"'{name}'" in report[1] for name in ("index.html", "index.md", "pareto.png"))
    assert shown(nb, "write_report([run_dir]").count("image/png") == 1
    assert "text/markdown" in shown(nb, "write_report([run_dir]")


def check_analyse_a_run(nb):
    # 32x40x36 cases: the patch pads 36 to a multiple of 2**3; three poolings of 32 -> 4 stages
    assert stdout(nb, "make_plan(compute_fingerprint").strip() == (
        "4 stages, patch (32, 40, 40); the grammar allows 2..4 stages")
    runs = stdout(nb, "runs = {name: search(name)")
    assert runs.count("'search.sqlite'") == 2 and "'random'" in runs and "'priorband'" in runs
    counts = stdout(nb, "history = {name: load_history(path)")
    header = counts.splitlines()[0].split()
    assert header[0] == "sampler" and {"default", "prior", "random", "promotion"} <= set(header)
    rows = {float(line.split()[0]): line.split()[1:] for line in counts.splitlines()[2:]}
    assert sorted(rows) == [1.0, 3.0, 9.0]  # rungs of eta 3 from 1 to 9 epochs
    default_column = header.index("default") - 1
    assert [rows[f][default_column] for f in (1.0, 3.0, 9.0)] == ["0", "0", "1"]  # once, at the max budget
    assert "text/html" in shown(nb, "history = {name: load_history(path)")
    finals = lines_matching(stdout(nb, "fig, ax = plt.subplots(figsize=(7, 4))\nfor name, df in history.items():\n"
                                       "    times, losses"),
                            r"(random|priorband)\s+final incumbent 1 - Dice (0\.\d+) after (\d+) s of training")
    assert [m[1] for m in finals] == ["random", "priorband"]
    assert shown(nb, "pareto_front(ok[").count("image/png") == 1 and "text/html" in shown(nb, "pareto_front(ok[")
    report = stdout(nb, "write_report([runs[").splitlines()
    assert report[0].endswith("report/index.html")
    assert all(f"'{name}'" in report[1] for name in ("index.html", "run1_importance.png", "run2_importance.png"))


def exact_wilcoxon_p(statistic: int, n: int) -> float:
    """Two-sided exact p of the signed-rank statistic min(W+, W-) without ties: 2 P(W <= statistic)."""
    counts = [1] + [0] * (n * (n + 1) // 2)  # counts[s]: subsets of the ranks 1..n with rank sum s
    for rank in range(1, n + 1):
        for total in range(len(counts) - 1, rank - 1, -1):
            counts[total] += counts[total - rank]
    return min(1.0, 2 * sum(counts[: statistic + 1]) / 2 ** n)


def check_from_search_to_deployment(nb):
    datasets = stdout(nb, "new_cases = make_synthetic_dataset").split()
    assert len(datasets) == 2 and all(d.endswith("Dataset900_SyntheticBrain") for d in datasets)
    search = stdout(nb, "summary = search(settings, run_dir")
    assert "search: space hpo+hnas, optimizer random, epochs 1..1 (eta 3), budget 3 trials" in search
    trials = lines_matching(search, r"trial (\d): Dice (0\.\d+), .*architecture unet .*")
    assert [int(m[1]) for m in trials] == [0, 1, 2]
    # 12 cases in nnU-Net's 5 folds: 3, 3, 2, 2, 2 validation cases; folds 0..2 validate 8 cases in all
    cv = stdout(nb, "model_dirs = cross_validate(")
    trained = lines_matching(cv, r".*/cv/(\w+)/fold_(\d): trained 3 x 8 iterations in [\d.]+ s, Dice (0\.\d+) on (\d) "
                                 r"validation cases")
    models = sorted({m[1] for m in trained})
    assert len(models) == 2 and models[0] == "default_3ep" and re.fullmatch(r"trial_\d{5}_3ep", models[1])
    assert sorted((m[1], m[2], m[4]) for m in trained) == [
        (model, fold, size) for model in models for fold, size in (("0", "3"), ("1", "3"), ("2", "2"))]
    for model in models:
        listing = next(line for line in cv.splitlines() if line.startswith(model + " ["))
        assert "'checkpoint.pt'" in listing and "'validation'" in listing
    evaluation = stdout(nb, "summary, out_dir = evaluate_run(run_dir, names)")
    rows = lines_matching(evaluation, r"\| (\w+) \| (\d+) \| (0\.\d+) \+- .*")
    assert sorted(m[1] for m in rows) == models and all(m[2] == "8" for m in rows)
    test = lines_matching(evaluation, r"\S+ vs default_3ep: Wilcoxon W = ([\d.]+), p = ([\d.e-]+), n = (\d+) cases")
    assert len(test) == 1 and test[0][3] == "8"
    statistic = float(test[0][1])
    assert statistic == int(statistic)
    assert float(test[0][2]) == pytest.approx(exact_wilcoxon_p(int(statistic), 8), rel=1e-3)
    assert "text/html" in shown(nb, "summary, out_dir = evaluate_run(run_dir, names)")
    assert shown(nb, "ax.boxplot(").count("image/png") == 1
    best = stdout(nb, "best = find_best(run_dir)")
    assert "find-best: 2 models on folds [0, 1, 2] (8 validation cases)" in best
    candidates = lines_matching(best, r"\| (\*?) \| ([\w+]+) \| ([12]) \| (0\.\d+) \| .*")
    assert sorted(m[2] for m in candidates) == sorted(models + ["+".join(models)])  # each model, and the pair
    starred = [m for m in candidates if m[1] == "*"]
    assert len(starred) == 1, best
    starred = starred[0]
    assert float(starred[4]) == max(float(m[4]) for m in candidates)  # the best mean Dice is chosen
    chosen = re.search(r"^best: ([\w+]+) \(CV Dice (0\.\d+) on 8 cases, folds \[0, 1, 2\]\)", best, re.M)
    assert chosen and (chosen[1], chosen[2]) == (starred[2], starred[4])
    assert '"folds": [\n    0,\n    1,\n    2\n  ],\n  "cases": 8' in best
    predicted = stdout(nb, "ensemble, written = predict_with(")
    members = int(starred[3])
    assert predicted.startswith(f"{3 * members} checkpoints; post-processing: ")  # each chosen model's 3 folds
    assert "['synth_000.nii.gz', 'synth_001.nii.gz', 'synth_002.nii.gz']" in predicted
    new_rows = lines_matching(predicted, r"\| (\w+) \| (\d+) \| (0\.\d+) \+- .*")
    assert sorted(m[1] for m in new_rows) == models and all(m[2] == "3" for m in new_rows)
    assert "no test (only 3 paired cases; the Wilcoxon test needs at least 6)" in predicted
    assert shown(nb, "image = np.asarray(nib.load(images[0]).dataobj)").count("image/png") == 1


CHECKS = {
    "01_grammar_and_derivations": check_grammar_and_derivations,
    "02_search_walkthrough": check_search_walkthrough,
    "03_analyse_a_run": check_analyse_a_run,
    "04_from_search_to_deployment": check_from_search_to_deployment,
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_and_prints_what_it_promises(path, tmp_path, monkeypatch):
    assert path.stem in CHECKS, f"notebook {path.name} has no output checks; add one to tests/test_notebooks.py"
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(path, as_version=4)
    # a generous per-cell limit: notebook 04's cross-validation cell alone takes minutes on a loaded 2-core machine
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    CHECKS[path.stem](notebook)
