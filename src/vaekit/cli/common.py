"""Shared CLI pieces: one-line errors, options generated from the config dataclasses."""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from typing import Any

from ..config import SECTIONS


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line on stderr, exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_config_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per config field (help from the field, default shown, SUPPRESS if not given);
    fields named in `skip` are left for the command to define its own way."""
    for section, dc in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for f in fields(dc):
            if f.name in skip:
                continue
            default = f.default if f.default is not MISSING else None
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name,
                                      "help": f"{f.metadata['help']} (default: {shown})"}
            kind = str(f.type)
            if kind == "bool":
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = {"int": int, "float": float}.get(kind.split(" ")[0], str)
                kwargs["metavar"] = kind.split(" ")[0].split("[")[0].upper()
                if "choices" in f.metadata:
                    kwargs["choices"] = f.metadata["choices"]
                    kwargs.pop("metavar")
            group.add_argument(option_name(f.name), **kwargs)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options the user typed (others were SUPPRESSed)."""
    names = {f.name for dc in SECTIONS.values() for f in fields(dc)}
    return {k: v for k, v in vars(args).items() if k in names}
