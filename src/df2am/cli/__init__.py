"""The ``df2am`` command line: a thin face over the library.

Each command group lives in its own module and registers its sub-parsers explicitly in
:func:`build_parser`. A command parses its arguments, calls one library function and prints
the result. User errors (:class:`~df2am.errors.Df2amError`) become one plain ``error:`` line on
stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from df2am import __version__
from df2am.errors import Df2amError


def build_parser() -> argparse.ArgumentParser:
    from df2am.cli import (
        data_commands,
        deploy_commands,
        eval_commands,
        export_commands,
        import_commands,
        run_commands,
        serve_commands,
        sweep_commands,
        visualize_commands,
    )

    parser = argparse.ArgumentParser(
        prog="df2am",
        description="DF²AM: RGB-infrared cross-modality person re-identification.",
    )
    parser.add_argument("--version", action="version", version=f"df2am {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    data_commands.register(sub)
    run_commands.register(sub)
    eval_commands.register(sub)
    sweep_commands.register(sub)
    export_commands.register(sub)
    import_commands.register(sub)
    deploy_commands.register(sub)
    visualize_commands.register(sub)
    serve_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``df2am`` command; the exit status (0, 2 for a user error, 130 interrupted)."""
    code = _run(argv)
    if _launched_rank():
        _leave_distributed(code)
    return code


def _launched_rank() -> bool:
    """Whether this process is one rank of a multi-process launch (torchrun's environment)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _leave_distributed(code: int) -> None:
    """End a rank with ``code`` without the interpreter's native teardown.

    By now the process group is destroyed and every file, lock and log is closed. What is
    left is torch's gloo/TCPStore teardown at interpreter exit, which can abort (SIGABRT,
    exit -6, no message) when the ranks leave at slightly different moments: seen once in CI
    on rank 0 after a shared refusal had printed its ``error:`` line. The exit status is the
    command's own, on every rank.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except Df2amError as exc:
        from df2am.data.images import printable  # file names may hold non-UTF-8 bytes

        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Disk full, permission denied, a vanished file while writing config.yaml, logs or
        # results: a plain message naming the file and the cause (-v keeps the traceback).
        if args.verbose:
            raise
        from df2am.data.images import printable

        where = f"{os.fsdecode(exc.filename)}: " if exc.filename else ""
        print(printable(f"error: {where}{exc.strerror or exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
