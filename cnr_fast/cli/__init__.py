"""`cnr-fast <verb>`: one module per verb, each with `add_parser(subparsers)` and `run(args) -> int`.

A UserError anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import UserError

VERBS = ("train", "unlearn", "audit", "compare", "ablate", "power", "taps", "doctor", "ls")  # benchmarks: bench/ (README)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnr-fast",
        description="Class-Specific Neuron Reset: remove a class from a trained classifier and audit that it is gone.",
    )
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"{__name__}.{verb}").add_parser(sub)
    for verb_parser in sub.choices.values():  # one thread policy for every verb (threads.py)
        verb_parser.add_argument("--threads", default=None, metavar="N|auto",
                                 help="torch CPU threads: a count, or auto (default: the cores not busy with other "
                                      "processes at start; OMP_NUM_THREADS wins over auto)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        _join_torchrun(args)
        from .. import threads

        threads.apply(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"cnr-fast {args.verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"cnr-fast {args.verb}: interrupted; no partial output was written", file=sys.stderr)
        return 130
    finally:
        from .. import dist

        dist.shutdown()


DISTRIBUTED_VERBS = ("unlearn", "train")


def _join_torchrun(args) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group; only rank 0 prints progress."""
    from .. import dist

    if dist.env_world_size() <= 1:
        return
    if args.verb not in DISTRIBUTED_VERBS:
        raise UserError(f"`cnr-fast {args.verb}` runs in one process; under torchrun use "
                        f"{' or '.join(DISTRIBUTED_VERBS)} (run compare / ablate seeds as separate processes and "
                        "merge them with --merge)")
    dist.setup(getattr(args, "device", None) or "auto")
    if not dist.is_main():
        args.quiet = True


if __name__ == "__main__":
    sys.exit(main())
