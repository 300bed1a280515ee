"""The `vqgen` command. Entry point: main().

`vqgen PROMPT ...` is short for `vqgen generate PROMPT ...`; use `vqgen -- PROMPT` for a prompt
that equals a command name. Every user mistake ends as one line on stderr and a non-zero exit.
Nothing here imports torch at module level: `vqgen --help` must answer at once.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="vqgen",
    help="Text to image with VQ-Diffusion. `vqgen PROMPT -o out.png` is short for `vqgen generate PROMPT -o out.png`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"vqgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Text to image with VQ-Diffusion. `vqgen PROMPT` is short for `vqgen generate PROMPT`."""


from . import generate, info  # noqa: E402,F401  (registers commands on app)
from . import edit  # noqa: E402,F401
from . import download, models  # noqa: E402,F401
from . import batch  # noqa: E402,F401
from . import train_demo  # noqa: E402,F401

COMMANDS = {"generate", "edit", "info", "download", "models", "batch", "train-demo"}
TOP_LEVEL_OPTIONS = {"-h", "--help", "--version"}


def _route(argv: list[str]) -> list[str]:
    """Send anything that is not a command (or a top-level option) to `generate`.
    `vqgen -- PROMPT [options]` takes PROMPT literally, even when it is a command name."""
    if argv[:1] == ["--"] and len(argv) > 1:
        prompt, rest = argv[1], argv[2:]
        return ["generate", *rest, "--", prompt] if prompt.startswith("-") else ["generate", prompt, *rest]
    if argv and argv[0] not in COMMANDS and argv[0] not in TOP_LEVEL_OPTIONS:
        return ["generate", *argv]
    return argv


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) of whichever click typer uses: its vendored copy (typer >= 0.29)
    or the click package (older typer)."""
    usage, abort = [], []
    try:
        from typer._click.exceptions import UsageError

        usage.append(UsageError)
    except ImportError:
        pass
    try:
        import click

        usage.append(click.exceptions.UsageError)
        abort.append(click.exceptions.Abort)
    except ImportError:
        pass
    abort += [getattr(typer, "Abort", KeyboardInterrupt), KeyboardInterrupt]
    return tuple(usage), tuple(abort)


def fail(message: str, code: int = 1) -> int:
    print(f"vqgen: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    from ..errors import VqgenError

    argv = _route(list(sys.argv[1:] if argv is None else argv))
    command = typer.main.get_command(app)
    usage_errors, aborts = _click_errors()
    try:
        code = command.main(args=argv, prog_name="vqgen", standalone_mode=False)
    except usage_errors as e:
        where = f"vqgen {argv[0]} --help" if argv and argv[0] in COMMANDS else "vqgen --help"
        return fail(f"{e.format_message()} (see {where})", 2)
    except aborts:
        return fail("interrupted", 130)
    except VqgenError as e:
        from .common import flag_message

        return fail(flag_message(e), e.exit_code)
    except MemoryError:
        return fail("out of memory; try fewer images (-n), --dtype float16 on a GPU, or fewer steps")
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
