"""The `hnas` command: each subcommand is a few lines over the library.

Bad arguments exit 2 with usage (argparse); an HnasError prints its message and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hnas.errors import HnasError

CONFIDENCES = ("low", "medium", "high")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.error("a command is required")  # exits 2 with usage
    try:
        return args.handler(args) or 0
    except HnasError as err:
        print(f"hnas: error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hnas", description="Grammar-based hierarchical NAS for nnU-Net-style segmentation U-Nets.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _plan_command(commands)
    _grammar_command(commands)
    _sample_command(commands)
    _show_command(commands)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the plan as JSON")
    parser.set_defaults(handler=_run_plan)


def _grammar_command(commands) -> None:
    parser = commands.add_parser("grammar", help="emit the Lark grammar for a dataset or plan")
    _add_plan_source(parser)
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the grammar here")
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
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=_run_sample)


def _show_command(commands) -> None:
    parser = commands.add_parser("show", help="derivation tree, network table, parameters and FLOPs of one string")
    parser.add_argument("architecture", metavar="ARCH",
                        help="an architecture string (quote it), or 'default' for nnU-Net's network")
    _add_plan_source(parser)
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="draw the derivation tree (.svg/.png/.pdf); the network goes to FILE's stem + "
                             "'_network' beside it")
    parser.add_argument("--dropout-rate", type=float, default=0.2, help="rate used where dropout is chosen")
    parser.set_defaults(handler=_run_show)


# --- handlers -------------------------------------------------------------------------------------

def _run_plan(args) -> int:
    from hnas import workflow

    plan = workflow.plan_for(args.dataset, max_stages=args.max_stages, dims=args.dims)
    print(workflow.describe_plan(plan))
    if args.output:
        plan.save(args.output)
        print(f"plan written to {args.output}")
    return 0


def _run_grammar(args) -> int:
    from hnas import workflow

    plan = workflow.resolve_plan(args.dataset, args.plan, args.max_stages)
    grammar = workflow.grammar_for(plan, extended=args.extended)
    if args.output:
        args.output.write_text(grammar)
        print(f"grammar for {plan.n_stages} stages written to {args.output}")
    else:
        print(grammar, end="")
    return 0


def _run_sample(args) -> int:
    from hnas import workflow

    if args.grammar:
        if args.dataset or args.plan:
            raise HnasError("give either --grammar or --dataset/--plan, not both")
        grammar = workflow.read_text(args.grammar, "grammar")
    else:
        plan = workflow.resolve_plan(args.dataset, args.plan, args.max_stages)
        grammar = workflow.grammar_for(plan, extended=args.extended)
    for sentence in workflow.sample(grammar, args.num, seed=args.seed, uniform=args.uniform,
                                    confidence=args.confidence):
        print(sentence)
    return 0


def _run_show(args) -> int:
    from hnas import workflow

    plan = workflow.resolve_plan(args.dataset, args.plan, args.max_stages)
    grammar = workflow.grammar_for(plan, extended=args.extended)
    print(workflow.describe_architecture(grammar, plan, args.architecture, dropout_rate=args.dropout_rate))
    if args.render:
        for path in workflow.render_architecture(grammar, plan, args.architecture, args.render):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
