"""The `hnas` command: each subcommand is a few lines over its step in :mod:`hnas.pipeline`.

Bad arguments exit 2 with usage (argparse); an HnasError prints its message and exits 1. A
handler imports its step when it runs, so `hnas --help` and the light commands load no torch.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from hnas.errors import HnasError
from hnas.priors import CONFIDENCES


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.error("a command is required")  # exits 2 with usage
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return args.handler(args) or 0
    except HnasError as err:
        print(f"hnas: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.filename is None:
            raise
        print(f"hnas: error: {_os_error(err)}", file=sys.stderr)
        return 1


def _os_error(err: OSError) -> str:
    """The last net under the checks: a path of the wrong kind, read-only or full, named in one line.

    The commands check the paths they are given; this catches what the file system says about
    the others (a file made read-only meanwhile, a disk that fills up), so no user sees a traceback.
    """
    paths = " and ".join(repr(str(p)) for p in (err.filename, err.filename2) if p is not None)
    what = {IsADirectoryError: "a file, not a folder", NotADirectoryError: "a folder, not a file",
            FileExistsError: "a path where nothing is in the way", PermissionError: "a path this user may use",
            FileNotFoundError: "an existing path"}.get(type(err), "a usable path")
    return f"{paths}: {err.strerror or err}; expected {what}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """hnas's own warnings as one line each, like its errors; others keep Python's format."""
    if category.__module__.startswith("hnas."):
        print(f"hnas: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hnas", description="Grammar-based hierarchical NAS for nnU-Net-style segmentation U-Nets.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _plan_command(commands)
    _grammar_command(commands)
    _sample_command(commands)
    _show_command(commands)
    _search_command(commands)
    _status_command(commands)
    _train_command(commands)
    _evaluate_command(commands)
    _find_best_command(commands)
    _predict_command(commands)
    _report_command(commands)
    _export_command(commands)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


#: numpy's and torch's seeding both accept [0, 2**32 - 1]; larger or negative seeds are refused up front
MAX_SEED = 2**32 - 1


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed from 0 to {MAX_SEED}, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer seed from 0 to {MAX_SEED}, got {text!r}")
    return value


def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder among ``path``'s parents (nothing can be written below it)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _output_file(text: str) -> Path:
    """A file to write: not an existing folder, and no file where a parent folder must be."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; expected a file path to write")
    blocking = _blocking_file(path)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{str(blocking)!r} is a file, so {text!r} cannot be written below it; "
                                         "expected a folder there")
    return path


def _output_dir(text: str) -> Path:
    """A folder to write into (created if missing): not an existing file, nor below one."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file; expected a folder (it is created if "
                                         "missing)")
    blocking = _blocking_file(path)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{str(blocking)!r} is a file, so folder {text!r} cannot be made below it")
    return path


def _add_plan_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", type=Path, metavar="DIR",
                        help="dataset folder (nnU-Net raw or MSD); default: the built-in synthetic data")
    source.add_argument("--plan", type=Path, metavar="FILE",
                        help="a plan JSON from `hnas plan -o`, or nnU-Net's nnUNetPlans.json")
    parser.add_argument("--max-stages", type=_positive_int, metavar="N",
                        help="stage count N of the grammar (default: the plan's own)")
    parser.add_argument("--extended", action="store_true",
                        help="offer the extended DNA choices (residual decoder, pooling, bottleneck, SE)")


def _plan_command(commands) -> None:
    parser = commands.add_parser("plan", help="plan a dataset the way nnU-Net does",
                                 description="Read a dataset (nnU-Net raw or MSD format), validate it, compute "
                                             "its fingerprint and print nnU-Net's plan for it.")
    parser.add_argument("dataset", type=Path, metavar="DATASET", nargs="?",
                        help="dataset folder, or nnU-Net's nnUNetPlans.json; default: the built-in synthetic data")
    parser.add_argument("--max-stages", type=_positive_int, metavar="N", help="cap or grow the topology to N stages")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=3, help="2D or 3D network (default 3)")
    parser.add_argument("--planner", choices=("default", "resenc-m"), default="default",
                        help="nnU-Net's planner: default (nnUNetPlans, plain conv U-Net) or resenc-m "
                             "(nnUNetResEncUNetMPlans: patch and batch sized for a residual encoder)")
    parser.add_argument("-o", "--output", type=_output_file, metavar="FILE", help="write the plan as JSON")
    parser.set_defaults(handler=_run_plan)


def _grammar_command(commands) -> None:
    parser = commands.add_parser("grammar", help="emit the Lark grammar for a dataset or plan")
    _add_plan_source(parser)
    parser.add_argument("-o", "--output", type=_output_file, metavar="FILE", help="write the grammar here")
    parser.set_defaults(handler=_run_grammar)


def _sample_command(commands) -> None:
    parser = commands.add_parser("sample", help="sample architecture strings from the grammar")
    _add_plan_source(parser)
    parser.add_argument("--grammar", type=Path, metavar="FILE", help="a grammar file from `hnas grammar -o`")
    parser.add_argument("-n", "--num", type=_positive_int, default=5, metavar="K", help="how many (default 5)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--uniform", action="store_true", help="uniform over each production's alternatives")
    how.add_argument("--confidence", choices=CONFIDENCES, default="medium",
                     help="prior confidence around nnU-Net's defaults (default medium)")
    parser.add_argument("--seed", type=_seed, default=0, help=f"random seed 0..{MAX_SEED} (default 0)")
    parser.add_argument("--prior-from", type=Path, metavar="RUN",
                        help="centre the prior on the incumbent architecture of the search in RUN (any dataset: "
                             "mapped onto this grammar, see docs/transfer.md)")
    parser.set_defaults(handler=_run_sample)


def _show_command(commands) -> None:
    parser = commands.add_parser("show", help="derivation tree, network table, parameters and FLOPs of one string")
    parser.add_argument("architecture", metavar="ARCH",
                        help="an architecture string (quote it), or 'default' for nnU-Net's network")
    _add_plan_source(parser)
    parser.add_argument("--render", type=_output_file, metavar="FILE",
                        help="draw the derivation tree (.svg/.png/.pdf; compact, the full tree to FILE's stem + "
                             "'_full'); the network goes to FILE's stem + '_network' beside it")
    parser.add_argument("--dropout-rate", type=float, default=0.2, help="rate used where dropout is chosen")
    parser.set_defaults(handler=_run_show)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _search_command(commands) -> None:
    from hnas.pipeline.spaces import SEARCH_OPTIMIZERS, SPACES

    parser = commands.add_parser(
        "search", help="search hyperparameters and architectures with (Regularized) PriorBand",
        description="Train and evaluate U-Nets under a multi-fidelity optimizer. Without --dataset it runs a "
                    "CPU-sized search on the built-in synthetic data. Fidelity = epochs; budget = number of "
                    "max-fidelity trainings.")
    parser.add_argument("--dataset", type=Path, metavar="DIR", help="dataset folder (nnU-Net raw or MSD)")
    parser.add_argument("--max-stages", type=_positive_int, metavar="N", help="stage count N of the grammar")
    # Settings default to None here (SearchSettings holds the defaults), so a resume can tell what was given.
    parser.add_argument("--space", choices=SPACES, help="search space (default hpo+hnas)")
    parser.add_argument("--optimizer", choices=SEARCH_OPTIMIZERS,
                        help="optimizer (default regularized-priorband: Dice and training runtime)")
    parser.add_argument("--confidence", choices=CONFIDENCES, help="prior confidence (default medium)")
    parser.add_argument("--preset", choices=("auto", "cpu", "nnunet"),
                        help="scale preset (default auto: nnunet with CUDA, cpu otherwise and for the built-in data)")
    limit = parser.add_argument_group("limits (default: the preset's budget)")
    limit.add_argument("--budget", type=_positive_float, metavar="B",
                       help="budget in max-fidelity trainings (a promotion pays only the epochs it adds)")
    limit.add_argument("--time-limit", type=_positive_float, metavar="T", help="wall-clock seconds for this call")
    limit.add_argument("--max-trials", type=_positive_int, metavar="K", help="stop after K trials")
    fidelity = parser.add_argument_group("fidelity (default: the preset's)")
    fidelity.add_argument("--min-epochs", type=_positive_int, metavar="E")
    fidelity.add_argument("--max-epochs", type=_positive_int, metavar="E")
    fidelity.add_argument("--eta", type=_positive_int, metavar="ETA")
    fidelity.add_argument("--iterations-per-epoch", type=_positive_int, metavar="I")
    parser.add_argument("--fold", type=int, choices=range(5), metavar="F", help="validation fold 0..4 (default 0)")
    parser.add_argument("--splits", type=Path, metavar="FILE",
                        help="nnU-Net's splits_final.json: the cases of each fold (default: nnU-Net's split, "
                             "KFold(5, shuffle, seed 12345) over the sorted case ids); copied into the run")
    parser.add_argument("--gpu-memory", type=_positive_float, metavar="GB",
                        help="never train a configuration whose estimated GPU training memory (weights, gradients, "
                             "optimizer state, activations at the plan's batch and patch with AMP) exceeds GB "
                             "(GiB); the sampler draws again and the pruned count is shown by status and report")
    parser.add_argument("--workers", type=_positive_int, help="parallel trials (Dask LocalCluster if > 1; default 1)")
    parser.add_argument("--preprocessing-workers", type=_positive_int, metavar="N",
                        help="processes preprocessing the cases (default: nnU-Net's 8, or the cores if fewer); "
                             "kept in run.json, in no cache key (the files are the same)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--run-dir", type=Path, metavar="DIR", help="run folder (default runs/<dataset>_<space>_...)")
    parser.add_argument("--resume", nargs="?", const=True, type=Path, metavar="RUN",
                        help="continue the run stored in RUN (or --run-dir) with its stored settings; flags given "
                             "again must match them, except the limits, --workers, --preprocessing-workers and "
                             "--scheduler")
    parser.add_argument("--seed", type=_seed, help=f"random seed 0..{MAX_SEED} (default 0)")
    parser.add_argument("--prior-from", type=Path, metavar="RUN",
                        help="centre the prior on the incumbent of the search in RUN (any dataset): its "
                             "hyperparameters clipped to this space, its architecture mapped onto this grammar; "
                             "kept in run.json (docs/transfer.md)")
    parser.add_argument("--warm-start", nargs="+", type=Path, metavar="RUN",
                        help="start from the finished trials of earlier runs of the same dataset, plan and space "
                             "(imported, not retrained; promotions continue their checkpoints; not counted in the "
                             "budget); kept in run.json (docs/warm-start.md)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        help="torch.compile each trial's network (default off; nnU-Net compiles on CUDA: its "
                             "start-up counts in the measured runtime); kept in run.json, a resume must match")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_search)


def _status_command(commands) -> None:
    parser = commands.add_parser("status", help="running, finished and failed trials of a run")
    parser.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    parser.set_defaults(handler=_run_status)


def _train_command(commands) -> None:
    parser = commands.add_parser("train", help="retrain a run's incumbent (or any trial) with a full budget",
                                 description="Without --folds: train one configuration on the run's fold into "
                                 "RUN/retrain/. With --folds: cross-validate the chosen configurations into RUN/cv/ "
                                 "(resumable) and predict each fold's validation cases.")
    parser.add_argument("--run", type=Path, required=True, metavar="RUN", help="a run folder")
    parser.add_argument("--trial", type=int, nargs="+", metavar="ID",
                        help="trial ids (default: the incumbent; several only with --folds)")
    parser.add_argument("--epochs", type=_positive_int, required=True, metavar="E", help="epochs to train")
    parser.add_argument("--folds", type=int, nargs="+", metavar="K", help="cross-validate on these folds (0..4)")
    parser.add_argument("--default", action="store_true",
                        help="with --folds: also the search space's default (nnU-Net's) configuration")
    parser.add_argument("--pareto", type=_positive_int, metavar="N",
                        help="with --folds: also the first N trials of the Pareto front at the top fidelity")
    parser.add_argument("--iterations-per-epoch", type=_positive_int, metavar="I",
                        help="with --folds: iterations per epoch (default: the run's)")
    parser.add_argument("--splits", type=Path, metavar="FILE",
                        help="with --folds: nnU-Net's splits_final.json for the folds (default: the run's split; "
                             "kept as RUN/cv/splits_final.json)")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        help="with --folds: train N folds at once in local processes (one GPU each, or cores // N "
                             "CPU threads each)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        help="torch.compile the networks for training and prediction (default: as the run's search)")
    parser.add_argument("--preprocessing-workers", type=_positive_int, metavar="N",
                        help="processes preprocessing the cases, if a plan's are not cached yet (default: the run's)")
    parser.set_defaults(handler=_run_train)


def _evaluate_command(commands) -> None:
    parser = commands.add_parser("evaluate", help="per-case Dice/HD95 of a run's cross-validated models, "
                                 "default vs others with a Wilcoxon test")
    parser.add_argument("--run", type=Path, required=True, metavar="RUN", help="a run folder with RUN/cv/ models")
    parser.add_argument("--models", nargs="+", metavar="NAME", help="model folders in RUN/cv/ (default: all)")
    parser.add_argument("--test-dir", type=Path, metavar="DIR",
                        help="a labelled test set (imagesTs/labelsTs + dataset.json, or a dataset folder), predicted "
                        "by each model's fold ensemble (default: the models' validation folds)")
    parser.add_argument("-o", "--output", type=_output_dir, metavar="DIR",
                        help="where metrics.csv and summary.json go (default: RUN/evaluation/...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier evaluation in the output folder (refused otherwise)")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="with --test-dir: score every model without its find-best post-processing (compare "
                             "the networks alone)")
    parser.add_argument("--allow-unusual-inputs", action="store_true",
                        help="with --test-dir: predict images refused as unlike the training data (voxel size beyond 8x the model's "
                             "with a long prediction, or above 2^30 voxels once resampled); still warned about")
    parser.set_defaults(handler=_run_evaluate)


def _find_best_command(commands) -> None:
    parser = commands.add_parser(
        "find-best", help="pick the best cross-validated model or pairwise ensemble and its post-processing",
        description="Like nnU-Net's find_best_configuration: scores every model in RUN/cv/ (from hnas train "
                    "--folds) and every pair's ensemble on their saved validation predictions, decides "
                    "largest-component post-processing for the best, writes RUN/cv/best_configuration.json "
                    "(usable as hnas predict --model) and prints the table.")
    parser.add_argument("--run", type=Path, required=True, metavar="RUN", help="a run folder with RUN/cv/ models")
    parser.add_argument("--top", type=_positive_int, metavar="K",
                        help="form ensembles only from the K best single models (default: all)")
    parser.set_defaults(handler=_run_find_best)


def _predict_command(commands) -> None:
    parser = commands.add_parser(
        "predict", help="segment images with a trained checkpoint or an ensemble",
        description="Several --model paths (or a model folder's folds) predict as one ensemble: the mean of their "
                    "softmax, each member on its own plan. A model folder or best_configuration.json with a "
                    "post-processing decision is post-processed as decided (when given alone).")
    parser.add_argument("--model", type=Path, nargs="+", required=True, metavar="PATH",
                        help="checkpoints (trial or retrain), model folders RUN/cv/<name> (their fold ensemble) or "
                             "RUN/cv/best_configuration.json (from hnas find-best); NIfTI files and folders of "
                             "them (no checkpoint inside) listed here are taken as images")
    parser.add_argument("images", type=Path, nargs="*", metavar="IMAGES",
                        help="NIfTI files or folders of them (as -i); several channels per case as "
                             "<case>_0000.nii.gz, <case>_0001.nii.gz, ...")
    parser.add_argument("-i", "--input", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of images, as nnUNetv2_predict -i: its .nii.gz/.nii files (not subfolders), "
                             "grouped into cases by the channel suffix _XXXX; repeatable, and IMAGES may be added "
                             "if no case is given twice")
    parser.add_argument("-o", "--output", type=_output_dir, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace label maps already in the output folder")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks (pays off only for many or large images; default off)")
    parser.add_argument("--allow-unusual-inputs", action="store_true",
                        help="predict images refused as unlike the training data (voxel size beyond 8x the model's "
                             "with a long prediction, or above 2^30 voxels once resampled); still warned about")
    parser.set_defaults(handler=_run_predict)


def _report_command(commands) -> None:
    parser = commands.add_parser("report", help="write an HTML/Markdown report of one or more runs",
                                 description="Cost over time (several runs overlaid), the Pareto front with the "
                                             "default marked, the incumbent's diagrams, the best trials and "
                                             "hyperparameter importance (fANOVA).")
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders to report (and compare)")
    parser.add_argument("-o", "--output", type=_output_dir, metavar="DIR", help="report folder (default RUN/report)")
    parser.set_defaults(handler=_run_report)


def _export_command(commands) -> None:
    parser = commands.add_parser("export-nnunet", help="add a run's incumbent to nnU-Net's plans as a configuration")
    parser.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    parser.add_argument("--plans", type=Path, required=True, metavar="FILE", help="nnU-Net's nnUNetPlans.json")
    parser.add_argument("-o", "--output", type=_output_file, required=True, metavar="FILE", help="plans file to write")
    parser.add_argument("--trial", type=int, metavar="ID", help="trial id (default: the incumbent)")
    parser.add_argument("--configuration-name", default="3d_fullres_hnas")
    parser.add_argument("--base-configuration", default="3d_fullres")
    parser.add_argument("--allow-preset", action="store_true",
                        help="export a run searched at another scale preset than nnunet (cpu: features 8..64, "
                             "batch 2, patch at most 48^3) at that scale, with a warning; refused without it")
    parser.set_defaults(handler=_run_export)


# --- handlers -------------------------------------------------------------------------------------

def _run_plan(args) -> int:
    from hnas.pipeline.plan import describe_plan, plan_for
    from hnas.pipeline.text import write_text

    plan = plan_for(args.dataset, max_stages=args.max_stages, dims=args.dims, planner=args.planner)
    print(describe_plan(plan))
    if args.output:
        write_text(args.output, plan.to_json() + "\n", "plan")
        print(f"plan written to {args.output}")
    return 0


def _run_grammar(args) -> int:
    from hnas.pipeline.grammar import grammar_for
    from hnas.pipeline.plan import resolve_plan
    from hnas.pipeline.text import write_text

    plan = resolve_plan(args.dataset, args.plan, args.max_stages)
    grammar = grammar_for(plan, extended=args.extended)
    if args.output:
        write_text(args.output, grammar, "grammar")
        print(f"grammar for {plan.n_stages} stages written to {args.output}")
    else:
        print(grammar, end="")
    return 0


def _run_sample(args) -> int:
    from hnas.pipeline.grammar import grammar_for
    from hnas.pipeline.plan import resolve_plan
    from hnas.pipeline.sample import sample
    from hnas.pipeline.text import read_text

    if args.grammar:
        if args.dataset or args.plan:
            raise HnasError("give either --grammar or --dataset/--plan, not both")
        grammar = read_text(args.grammar, "grammar")
    else:
        plan = resolve_plan(args.dataset, args.plan, args.max_stages)
        grammar = grammar_for(plan, extended=args.extended)
    centre = None
    if args.prior_from:
        from hnas.pipeline.transfer import architecture_from

        if args.uniform:
            raise HnasError("--prior-from centres the prior, --uniform has none; give one of them")
        mapped, trial = architecture_from(args.prior_from, grammar)
        centre = mapped.architecture
        print(f"prior: centred on trial {trial.trial_id} of {args.prior_from}: {centre}", file=sys.stderr)
        for note in mapped.notes:
            print(f"  note: {note}", file=sys.stderr)
    for sentence in sample(grammar, args.num, seed=args.seed, uniform=args.uniform,
                                    confidence=args.confidence, centre=centre):
        print(sentence)
    return 0


def _run_show(args) -> int:
    from hnas.pipeline.grammar import grammar_for
    from hnas.pipeline.plan import resolve_plan
    from hnas.pipeline.show import describe_architecture, render_architecture

    plan = resolve_plan(args.dataset, args.plan, args.max_stages)
    grammar = grammar_for(plan, extended=args.extended)
    print(describe_architecture(grammar, plan, args.architecture, dropout_rate=args.dropout_rate))
    if args.render:
        for path in render_architecture(grammar, plan, args.architecture, args.render):
            print(f"wrote {path}")
    return 0


#: `hnas search` flags that are run.json's settings (the others say how this call runs)
SEARCH_FLAGS = ("dataset", "max_stages", "space", "optimizer", "confidence", "preset", "budget", "time_limit",
                "max_trials", "min_epochs", "max_epochs", "eta", "iterations_per_epoch", "fold", "workers",
                "scheduler", "seed", "splits", "warm_start", "gpu_memory", "compile", "preprocessing_workers")


def _search_run_dir(args, settings) -> Path:
    """--resume RUN, --run-dir, or the default folder named after the settings."""
    from hnas.errors import SearchError
    from hnas.pipeline.search import default_run_dir

    if isinstance(args.resume, Path):
        if args.run_dir is not None and args.run_dir.resolve() != args.resume.resolve():
            raise SearchError(f"--resume {str(args.resume)!r} and --run-dir {str(args.run_dir)!r} name two "
                              "folders; expected one run folder (give either)")
        return args.resume
    return args.run_dir or default_run_dir(settings)


def _run_search(args) -> int:
    from hnas.pipeline.layout import RunFolder
    from hnas.pipeline.run import SearchSettings
    from hnas.pipeline.search import resumed_settings, search, summary_text

    given = {name: getattr(args, name) for name in SEARCH_FLAGS if getattr(args, name) is not None}
    for name in ("dataset", "splits"):
        if name in given:
            given[name] = str(given[name])
    if "warm_start" in given:  # absolute, as run.json keeps them (a resume compares them)
        given["warm_start"] = [str(run.resolve()) for run in given["warm_start"]]
    run_dir = _search_run_dir(args, SearchSettings(**given))
    settings = resumed_settings(run_dir, given) if args.resume else SearchSettings(**given)
    summary = search(settings, run_dir, resume=bool(args.resume), progress=not args.no_progress,
                     prior_from=args.prior_from)
    print()
    print(summary_text(summary))
    print(f"report: {RunFolder(run_dir).summary} (status: hnas status {run_dir})")
    return 0


def _run_status(args) -> int:
    from hnas.pipeline.status import status_text

    print(status_text(args.run))
    return 0


def _run_train(args) -> int:
    from hnas.errors import SearchError

    if args.folds is not None:
        return _run_cross_validation(args)
    fold_options = (args.default, args.pareto, args.iterations_per_epoch, args.workers, args.splits)
    if any(fold_options) or (args.trial and len(args.trial) > 1):
        raise SearchError("--default, --pareto, --iterations-per-epoch, --workers, --splits and several --trial ids "
                          "need --folds; expected e.g. `hnas train --run RUN --folds 0 1 2 --epochs E --default`")
    from hnas.pipeline.retrain import retrain

    trial, result = retrain(args.run, args.epochs, args.trial[0] if args.trial else None, compile=args.compile,
                            preprocessing_workers=args.preprocessing_workers)
    print(f"retrained trial {trial.trial_id} for {args.epochs} epochs: Dice {result.mean_dice:.4f}, "
          f"training {result.runtime:.1f} s")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _run_cross_validation(args) -> int:
    from hnas.pipeline import cross_validate as cv

    cv.check_folds(args.folds)  # before planning and loading the run: a typo fails at once
    choices = [cv.default_choice(args.run)] if args.default else []
    choices += [cv.trial_choice(args.run, t) for t in args.trial or []]
    choices += cv.pareto_choices(args.run, args.pareto) if args.pareto else []
    if not choices:
        choices = [cv.trial_choice(args.run)]  # the incumbent
    unique = cv.distinct_choices(choices, args.epochs)
    for folder in cv.cross_validate(args.run, unique, args.folds, args.epochs,
                                    iterations_per_epoch=args.iterations_per_epoch, workers=args.workers or 1,
                                    splits=args.splits, compile=args.compile,
                                    preprocessing_workers=args.preprocessing_workers):
        print(f"cross-validated: {folder}")
    return 0


def _run_evaluate(args) -> int:
    from hnas.pipeline.evaluate import evaluate_run, summary_table
    from hnas.pipeline.layout import EVALUATION_SUMMARY_FILE, METRICS_FILE

    summary, out_dir = evaluate_run(args.run, args.models, test_dir=args.test_dir, out_dir=args.output,
                                    overwrite=args.overwrite, limits=_input_limits(args),
                                    postprocessing=not args.no_postprocessing)
    print(summary_table(summary))
    print(f"wrote {out_dir / METRICS_FILE} and {out_dir / EVALUATION_SUMMARY_FILE}")
    return 0


def _input_limits(args):
    from hnas.train.prediction import InputLimits

    return InputLimits.lifted() if args.allow_unusual_inputs else InputLimits()


def _run_predict(args) -> int:
    from hnas.data.io import is_nifti
    from hnas.pipeline.predict import image_folders, is_image_folder, predict_with

    # --model takes several paths, so images written right after it land there; a model is never NIfTI
    models = [p for p in args.model if not (is_nifti(p) or is_image_folder(p))]
    images = image_folders(args.input) + [p for p in args.model if p not in models] + list(args.images)
    ensemble, written = predict_with(models, images, args.output, device=args.device, overwrite=args.overwrite,
                                     limits=_input_limits(args), compile=args.compile)
    if len(ensemble.members) > 1:
        print(f"ensemble of {len(ensemble.members)} checkpoints (mean softmax)")
    if ensemble.postprocessing is not None:
        print(f"post-processing: {ensemble.postprocessing.describe()}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _run_find_best(args) -> int:
    from hnas.pipeline.find_best import best_table, find_best
    from hnas.pipeline.layout import RunFolder

    result = find_best(args.run, top=args.top)
    print(best_table(result))
    best = RunFolder(args.run).best_configuration
    print(f"wrote {best} (hnas predict --model {best} IMAGES -o DIR)")
    return 0


def _run_report(args) -> int:
    from hnas.pipeline.layout import RunFolder
    from hnas.pipeline.report import write_report

    print(f"report: {write_report(args.runs, args.output or RunFolder(args.runs[0]).report)}")
    return 0


def _run_export(args) -> int:
    from hnas.pipeline.export import export_run

    export = export_run(args.run, args.plans, args.output, trial_id=args.trial,
                        configuration_name=args.configuration_name, base_configuration=args.base_configuration,
                        allow_preset=args.allow_preset)
    print(f"{args.configuration_name!r} replaces these values of nnU-Net's {args.base_configuration!r}:")
    for replacement in export.replaced:
        print(f"  {replacement.describe()}")
    out = export.path
    print(f"wrote {out}: train it with nnUNetv2_train DATASET {args.configuration_name} FOLD -p {out.stem}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
