"""The report of one or more runs: a self-contained folder with index.html, index.md and images.

Sections: the runs side by side, the incumbent over cumulative training time (one curve per
run, e.g. PriorBand vs random search), the 1 - Dice / runtime Pareto front with each run's
default configuration marked, per run the incumbent's derivation tree and network diagram, a
table of the best trials and the hyperparameter importance (fANOVA, see :mod:`hnas.viz.importance`).
The derivation tree is shown compact (per-stage rules collapsed, readable at page width) and
linked to its full picture; importance from too few trials is shown with a warning.

Runs arrive as :class:`ReportRun`, plain data read from run folders by :mod:`hnas.pipeline.report`.
Only the search history is required: without a plan and grammar the diagrams and the
architecture's importance are left out, with a note saying so.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hnas.errors import HnasError, SearchError
from hnas.planning.plan import Plan
from hnas.search import RunSummary
from hnas.search.feasibility import pruned_summary
from hnas.train.config import NAS_KEYS
from hnas.viz import plots
from hnas.viz.importance import Importance, hyperparameter_importance

if TYPE_CHECKING:  # diagrams import lark; the report loads them only when a run has a grammar
    from hnas.viz.diagrams import DerivationPictures

BEST_TRIALS = 10
OPTIMIZER_NAMES = {"random": "random search", "priorband": "PriorBand", "regularized-priorband": "Regularized PriorBand",
                   "hyperband": "Hyperband", "successive-halving": "successive halving", "bohb": "BOHB",
                   "priorband-bo": "PriorBand+BO"}


# ------------------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class ReportRun:
    """A stored run plus the files `hnas search` keeps beside its history."""

    run_dir: Path
    label: str
    summary: RunSummary
    metadata: dict[str, Any]
    settings: dict[str, Any]  # run.json ({} when absent)
    plan: Plan | None
    grammar: str | None
    pruned: int = 0  # sampled configurations the run's filter (--gpu-memory) refused

    @property
    def trials(self):
        return self.summary.history

    @property
    def space_name(self) -> str | None:
        return self.settings.get("space")


def run_label(metadata: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """``PriorBand (hpo+hnas)``: the optimizer and, when run.json names it, the search space."""
    optimizer = str(metadata.get("optimizer", "unknown optimizer"))
    name = OPTIMIZER_NAMES.get(optimizer, optimizer)
    return f"{name} ({settings['space']})" if settings.get("space") else name


def _unique_labels(runs: Sequence[ReportRun]) -> list[ReportRun]:
    """Runs that share a label (two seeds, say) get their folder name added."""
    labels = [r.label for r in runs]
    return [r if labels.count(r.label) == 1 else
            replace(r, label=f"{r.label} [{r.run_dir.name}]") for r in runs]


def default_config(space_description: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The space's default configuration (active parameters only) from its stored description."""
    config: dict[str, Any] = {}
    for entry in space_description:
        condition = entry.get("condition")
        if condition and config.get(condition["parent"]) not in condition["values"]:
            continue
        config[entry["name"]] = entry["default"]
    return config


def default_trial(run: ReportRun):
    """The default configuration's successful trial at the highest fidelity (PriorBand's first job)."""
    default = default_config(run.metadata.get("space", []))
    matches = [t for t in run.trials if t.is_success and (t.job.sampler == "default" or dict(t.config) == default)]
    return max(matches, key=lambda t: (t.fidelity, -t.trial_id)) if matches else None


def best_trials(trials: Sequence, n: int = BEST_TRIALS) -> list:
    """Successful trials ranked like the incumbent: highest fidelity first, then lowest loss."""
    successes = [t for t in trials if t.is_success]
    return sorted(successes, key=lambda t: (-t.fidelity, t.loss, t.trial_id))[:n]


def incumbent_architecture(run: ReportRun, trial) -> str | None:
    """The sentence a trial trained: its architecture parameter, the objective's record, or nnU-Net's default."""
    from hnas.grammar import default_architecture, grammar_options

    text = trial.config.get(run.metadata.get("architecture_key") or "architecture") or \
        (trial.extra or {}).get("architecture")
    if text is None and run.plan is not None and run.grammar is not None:
        text = default_architecture(run.plan, grammar_options(run.grammar))
    return text


# ---------------------------------------------------------------------------- document model
# A report is a list of blocks rendered twice: to HTML and to Markdown.

@dataclass(frozen=True)
class Block:
    kind: str  # "h1", "h2", "h3", "p", "warning", "img", "link", "table", "pre"
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    href: str = ""  # a "link" block's target, a file in the report folder


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Block:
    return Block("table", headers=tuple(headers), rows=tuple(tuple(str(c) for c in row) for row in rows))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _dice(trial) -> str:
    return "-" if trial.loss is None else f"{1.0 - trial.loss:.4f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sampler(trial) -> str:
    """The sampler, and for a warm start's imported trial where it came from (``imported from RUN:TRIAL``)."""
    if getattr(trial, "imported", None) is None:
        return trial.job.sampler
    return f"{trial.job.sampler}, imported from {Path(trial.imported.run).name}:{trial.imported.trial_id}"


def _hyperparameters(trial, architecture_key: str | None) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(trial.config.items()) if k != architecture_key)


# ------------------------------------------------------------------------------------ sections

def _overview(runs: Sequence[ReportRun]) -> list[Block]:
    rows = []
    for run in runs:
        s = run.summary
        pending = sum(t.state == "pending" for t in run.trials)
        incumbent = s.incumbent
        by_id = {t.trial_id: t for t in run.trials}
        total = sum(plots.training_time_spent(t, by_id) for t in run.trials)
        rows.append((run.label, str(run.run_dir), run.space_name or "-", f"{len(s.successes)} / {len(s.failures)} / {pending}",
                     f"{s.budget_used:.2f}", f"{total:.1f}",
                     "-" if incumbent is None else f"trial {incumbent.trial_id}: Dice {_dice(incumbent)} "
                                                   f"at {incumbent.fidelity:g} epochs"))
    blocks = [Block("h2", "Runs"),
              _table(("run", "folder", "space", "trials ok / failed / pending", "budget used (max-fidelity evals)",
                      "training time (s)", "incumbent"), rows)]
    for run in runs:
        imported = [t for t in run.trials if getattr(t, "imported", None) is not None]
        if imported:
            sources = ", ".join(sorted({str(t.imported.run) for t in imported}))
            blocks.append(Block("p", f"{run.label}: warm-started, its first {len(imported)} trials are imported from "
                                     f"{sources} (counted among its trials, not in its budget used)."))
    return blocks


def _cost_over_time(runs: Sequence[ReportRun], out_dir: Path) -> list[Block]:
    curves = {run.label: plots.incumbent_trajectory(run.trials) for run in runs}
    blocks = [Block("h2", "Incumbent over training time")]
    if not any(curves.values()):
        return blocks + [Block("p", "No run has a successful trial yet.")]
    path = plots.plot_cost_over_time(curves, out_dir / "cost_over_time.png")
    return blocks + [
        Block("p", "The incumbent's 1 - Dice (best at the highest fidelity reached so far, as the search reports it) "
                   "against the cumulative training time of all trials (a promotion adds only the training it "
                   "continued)." + (" One curve per run." if len(runs) > 1 else "")),
        Block("img", path.name)]


def _pareto(runs: Sequence[ReportRun], out_dir: Path) -> list[Block]:
    blocks = [Block("h2", "Pareto front: 1 - Dice vs training runtime")]
    series, notes, rows = [], [], []
    for run in runs:
        default = default_trial(run)
        incumbent = run.summary.incumbent
        series.append(plots.pareto_series(
            run.label, run.trials, default_trial_id=None if default is None else default.trial_id,
            incumbent_id=None if incumbent is None else incumbent.trial_id))
        notes.append(f"{run.label}: " + (f"default configuration = trial {default.trial_id} (Dice {_dice(default)}, "
                                         f"{_seconds(default.cost)} s)" if default is not None
                                         else "the default configuration was not evaluated"))
        rows += [(run.label, t.trial_id, f"{t.fidelity:g}", _dice(t), _seconds(t.cost), _sampler(t))
                 for t in run.summary.pareto_front]
    if not any(s.points for s in series):
        return blocks + [Block("p", "No run has a successful trial yet.")]
    path = plots.plot_pareto(series, out_dir / "pareto.png")
    return blocks + [
        Block("p", "Every successful trial (all fidelities); the line joins the non-dominated ones. "
                   "Star: the default configuration (nnU-Net's, PriorBand's first job); diamond: the incumbent. "
                   + "; ".join(notes) + "."),
        Block("img", path.name),
        _table(("run", "trial", "epochs", "Dice", "runtime (s)", "sampler"), rows)]


def _incumbent(run: ReportRun, index: int, out_dir: Path) -> list[Block]:
    from hnas.viz.diagrams import network_graph, network_text, render, render_derivation

    trial = run.summary.incumbent
    blocks = [Block("h3", "Incumbent")]
    if trial is None:
        return blocks + [Block("p", "No successful trial yet.")]
    architecture = incumbent_architecture(run, trial)
    blocks.append(Block("p", f"Trial {trial.trial_id}: Dice {_dice(trial)} after {trial.fidelity:g} epochs, "
                             f"{_seconds(trial.cost)} s of training (sampler: {_sampler(trial)})."))
    blocks.append(Block("pre", f"architecture: {architecture or '-'}\nhyperparameters: "
                               f"{_hyperparameters(trial, run.metadata.get('architecture_key'))}"))
    if architecture is None or run.plan is None or run.grammar is None:
        return blocks + [Block("p", "No diagrams: the run folder has no plan.json/grammar.lark.")]
    try:
        from hnas.cfgunet import compile_architecture
        from hnas.grammar import parse

        tree = parse(run.grammar, architecture)
        spec = compile_architecture(run.grammar, architecture, run.plan,
                                    dropout_rate=float(trial.config.get("dropout_rate", 0.0)))
    except HnasError as exc:
        return blocks + [Block("p", f"No diagrams: {exc}")]
    title = f"{run.label}: trial {trial.trial_id}"
    derivation = render_derivation(tree, out_dir / f"run{index}_derivation.svg", title=title)
    network = render(network_graph(spec, run.plan.patch_size, title=title), out_dir / f"run{index}_network.svg",
                     text_fallback=network_text(spec, run.plan.patch_size))
    blocks += _derivation(derivation)
    features = (" The features shown are the run plan's; this trial's base_features/max_features rescale them in "
                "training." if any(k in trial.config for k in NAS_KEYS) else "")
    blocks.append(Block("p", f"Network (patch {'x'.join(map(str, run.plan.patch_size))}).{features}"))
    blocks.append(_picture(network))
    if network.suffix != ".txt":  # the text fallback already is this table
        blocks.append(Block("pre", network_text(spec, run.plan.patch_size)))
    return blocks


def _derivation(pictures: DerivationPictures) -> list[Block]:
    """The compact tree with what it collapsed, and a link to the full one (text tree without dot)."""
    if pictures.full is None:
        return [Block("p", "Derivation tree (a rule's choices follow it after '='; fixed words are quoted):"),
                _picture(pictures.compact)]
    collapsed = ", ".join(f"{run.name} ({run.n_stages} stages)" for run in pictures.stage_runs)
    return [Block("p", "Derivation tree, compact: chains of single-child rules share a box (a -> b), a rule's "
                       "one-word choices are listed in one blue box, and per-stage rules are collapsed into one "
                       "orange box each, stages that chose the same blocks on one line"
                       + (f" (collapsed: {collapsed})." if collapsed else ".")),
            _picture(pictures.compact),
            Block("link", f"Full derivation tree ({pictures.full_nodes} nodes, one per rule and word)",
                  href=pictures.full.name)]


def _picture(path: Path) -> Block:
    """An image, or the text rendering `render` wrote when graphviz's dot is missing."""
    return Block("img", path.name) if path.suffix != ".txt" else Block("pre", path.read_text().rstrip())


def _best_trials(run: ReportRun) -> list[Block]:
    key = run.metadata.get("architecture_key")
    rows = [(rank, t.trial_id, f"{t.fidelity:g}", _dice(t), _seconds(t.cost), _sampler(t),
             "-" if t.parent_id is None else t.parent_id, t.config.get(key, "-") if key else "-",
             _hyperparameters(t, key))
            for rank, t in enumerate(best_trials(run.trials), start=1)]
    blocks = [Block("h3", f"Best trials (top {BEST_TRIALS}: highest fidelity first, then Dice)")]
    if not rows:
        return blocks + [Block("p", "No successful trial yet.")]
    blocks.append(_table(("rank", "trial", "epochs", "Dice", "runtime (s)", "sampler", "promoted from",
                          "architecture", "hyperparameters"), rows))
    failures = run.summary.failures
    if failures:
        blocks.append(Block("p", f"{len(failures)} failed trial(s) (last line of each error; the full one is in "
                                 "search.sqlite):"))
        blocks.append(Block("pre", "\n".join(f"trial {t.trial_id}: {_last_line(t.error)}" for t in failures)))
    return blocks


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "unknown error").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def run_importance(run: ReportRun) -> Importance:
    """The importance the report shows for ``run`` (deterministic: `hnas report` may print its counts)."""
    return hyperparameter_importance(run.trials, run.metadata.get("space", []), grammar=run.grammar, plan=run.plan)


def _importance(run: ReportRun, index: int, out_dir: Path) -> list[Block]:
    blocks = [Block("h3", "Hyperparameter importance")]
    try:
        result = run_importance(run)
    except HnasError as exc:  # optuna missing (ImportanceError), or an architecture the grammar rejects
        return blocks + [Block("p", f"Not computed: {exc}")]
    excluded = "; ".join(f"{name}: {why}" for name, why in result.excluded.items())
    if not result.available:
        return blocks + [Block("p", f"Not computed: {result.note}." + (f" Excluded: {excluded}." if excluded else ""))]
    title = f"{run.label}: fANOVA over {result.n_trials} trials"
    path = plots.plot_importance(result.values, out_dir / f"run{index}_importance.png",
                                 title=title if result.reliable else
                                 f"{title} (unreliable below {result.min_reliable_trials})")
    if not result.reliable:
        blocks.append(Block("warning", f"Unreliable: {result.reliability_note}. With this few trials even a parameter "
                                       "that drives the loss is often not ranked first: read the ranking below as "
                                       "a hint, not a finding."))
    return blocks + [
        Block("p", f"{result.method} over the {result.n_trials} successful trials: each parameter's share of the "
                   "variance of 1 - Dice explained by its main effect. The architecture enters as derived features "
                   "(stage count, encoder type, total encoder and decoder blocks), the fidelity as 'epochs'."
                   + (f" Excluded: {excluded}." if excluded else "")),
        Block("img", path.name),
        _table(("parameter", "importance"), [(name, f"{value:.3f}") for name, value in result.values.items()])]


# ------------------------------------------------------------------------------------ output

_CSS = """
body { font-family: -apple-system, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #ddd; } h2 { margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f6f8fa; padding: 0.7em; overflow-x: auto; font-size: 0.8em; white-space: pre-wrap; }
.warning { background: #fff4e0; border-left: 4px solid #e08a00; padding: 0.5em 0.8em; }
"""


def _html(blocks: Sequence[Block], title: str) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for block in blocks:
        text = html.escape(block.text)
        if block.kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{block.kind}>{text}</{block.kind}>")
        elif block.kind == "warning":
            parts.append(f'<p class="warning"><strong>Warning:</strong> {text}</p>')
        elif block.kind == "pre":
            parts.append(f"<pre>{text}</pre>")
        elif block.kind == "img":
            parts.append(f'<p><img src="{html.escape(block.text, quote=True)}" alt="{text}"></p>')
        elif block.kind == "link":
            parts.append(f'<p><a href="{html.escape(block.href, quote=True)}">{text}</a></p>')
        elif block.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(parts + ["</body>", "</html>"]) + "\n"


def _markdown(blocks: Sequence[Block]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    parts = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            parts.append("#" * int(block.kind[1]) + " " + block.text)
        elif block.kind == "p":
            parts.append(block.text)
        elif block.kind == "warning":
            parts.append(f"> **Warning:** {block.text}")
        elif block.kind == "pre":
            parts.append("```\n" + block.text + "\n```")
        elif block.kind == "img":
            parts.append(f"![{block.text}]({block.text})")
        elif block.kind == "link":
            parts.append(f"[{block.text}]({block.href})")
        elif block.kind == "table":
            lines = ["| " + " | ".join(cell(h) for h in block.headers) + " |",
                     "|" + "---|" * len(block.headers)]
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def report_blocks(runs: Sequence[ReportRun], out_dir: Path) -> list[Block]:
    """All sections (writing the images into ``out_dir`` as it goes)."""
    title = "hnas report: " + " vs ".join(run.label for run in runs)
    blocks = [Block("h1", title)]
    blocks += _overview(runs) + _cost_over_time(runs, out_dir) + _pareto(runs, out_dir)
    for index, run in enumerate(runs, start=1):
        blocks.append(Block("h2", f"Run {index}: {run.label}"))
        blocks.append(Block("p", f"Folder {run.run_dir}; optimizer settings "
                                 f"{json.dumps(run.metadata.get('optimizer_settings', {}), sort_keys=True)}; "
                                 f"seed {run.metadata.get('seed')}."))
        pruned = pruned_summary(run.metadata.get("config_filter"), run.pruned)
        if pruned:
            blocks.append(Block("p", pruned[0].upper() + pruned[1:] + "."))
        blocks += _incumbent(run, index, out_dir) + _best_trials(run) + _importance(run, index, out_dir)
    return blocks


def render_report(runs: Sequence[ReportRun], out_dir: str | Path) -> Path:
    """Write the report of ``runs`` (several runs are overlaid) into ``out_dir``; returns index.html.

    ``out_dir`` is self-contained (index.html, index.md and the images they reference); files of
    an earlier report there are overwritten, nothing else is touched.
    """
    if not runs:
        raise SearchError("a report needs at least one run folder")
    runs = _unique_labels(list(runs))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SearchError(f"report folder {str(out_dir)!r} is a file; expected a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = report_blocks(runs, out_dir)
    (out_dir / "index.md").write_text(_markdown(blocks))
    index = out_dir / "index.html"
    index.write_text(_html(blocks, blocks[0].text))
    return index

