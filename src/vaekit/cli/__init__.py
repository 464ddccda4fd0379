"""The `vaekit` command: parses, then calls the library. Each subcommand is a module here that
defines HELP, add_arguments(parser) and run(args) -> int; adding one is one line in COMMANDS."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import signal
import sys

from ..errors import VaekitError
from ..tempfiles import remove_pending
from .common import OneLineParser

COMMANDS = ["train", "eval", "sample",
            "interpolate", "traverse", "manifold", "shift", "encode", "probe", "score", "detect",
            "report", "sweep", "export", "serve"]


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="vaekit", description="Variational autoencoders: train, evaluate, "
                           "sample, move through the latent space, encode, score anomalies and "
                           "out-of-distribution inputs, report, export and serve; every figure in "
                           "nats per example.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def quiet_stdout() -> None:
    """Point stdout at /dev/null so Python's flush at exit does not hit the closed pipe again
    (the recipe of the Python docs, 'Note on SIGPIPE')."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):  # not a file (captured)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop) raised where the program is, as Ctrl-C is: the
    `finally` blocks run (a temp file of a checkpoint being written is removed), and the command
    ends in one line. Without it the process died at once, leaving such temp files behind."""


def terminate(signum, frame) -> None:
    raise Terminated


def interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM that `error` was raised while handling, if any: a cleanup the
    interrupt ran (closing a file, removing a temp folder) can fail in turn, and what the user did
    was still stop the command."""
    seen = error.__context__
    while seen is not None and not isinstance(seen, KeyboardInterrupt):
        seen = seen.__context__
    return seen


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None and "TORCHELASTIC_RUN_ID" not in os.environ  # not a caller's,
    argv = sys.argv[1:] if argv is None else argv  # nor a torchrun rank (torchrun stops those)
    args = build_parser().parse_args(argv)
    args.argv = ["vaekit", *argv]
    if own_process:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            signal.signal(signal.SIGTERM, terminate)
    try:
        return args.run(args) or 0
    except VaekitError as e:
        print(f"vaekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vaekit eval ... | head`: the reader left; nothing to report
        quiet_stdout()
        return 0
    except OSError as e:  # full disk, read-only folder, a file where a folder should be, ...
        if (interrupt := interrupt_behind(e)) is not None:
            return interrupted(args.command, interrupt)
        where = f" {e.filename}" if e.filename else ""
        print(f"vaekit {args.command}: error: cannot read or write{where}: "
              f"{e.strerror or e}; free some space or choose another location", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return interrupted(args.command, e)
    finally:
        remove_pending()  # temp files of a write the interrupt ended between two lines


def interrupted(command: str, interrupt: KeyboardInterrupt) -> int:
    """The one line and the exit code of a command stopped by SIGTERM or Ctrl-C."""
    if isinstance(interrupt, Terminated):
        print(f"vaekit {command}: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(f"vaekit {command}: interrupted", file=sys.stderr)
    return 130
