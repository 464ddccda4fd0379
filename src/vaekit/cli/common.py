"""Shared CLI pieces: one-line errors, options generated from the config dataclasses, and the one
definition of the data, compute (--threads/--device) and --seed options of the commands that use a
trained run."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from ..config import SECTIONS, SIZES, DataConfig, TrainConfig
from ..runtime import check_seed, resolve_device, set_threads

# DataConfig fields that say where and how to read data (not how the run was fitted): the commands
# used after training take these, with the run's own values as defaults.
READ_FIELDS = ("data_dir", "data_url", "label_column", "image_size", "layout")
NO_LABELS = "none"  # --label-column none: the data has no label column (commands after training)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line on stderr, exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_field_option(group, f: Field, default_text: str | None = None, extra_help: str = "") -> None:
    """One option for one config field: help from the field, SUPPRESSed when not given (so that
    a later layer, a config file or a run's own config, supplies the value)."""
    default = f.default if f.default is not MISSING else None
    shown = default_text or (",".join(map(str, default)) if isinstance(default, tuple) else default)
    text = f"{f.metadata['help']}{extra_help}"
    if default_text:  # e.g. "the run's": replaces the default the field's help may state
        text = re.sub(r" \(default: [^)]*\)", "", text)
    follows_data = default is None and f.name in SIZES  # its help says how the data sets it
    if default_text or ("(default:" not in text and not follows_data):  # or says it in its words
        text += f" (default: {shown})"
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name, "help": text}
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


def add_config_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per config field (help from the field, default shown, SUPPRESS if not given);
    fields named in `skip` are left for the command to define its own way."""
    for section, dc in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for f in fields(dc):
            if f.name not in skip:
                add_field_option(group, f)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options the user typed (others were SUPPRESSed)."""
    names = {f.name for dc in SECTIONS.values() for f in fields(dc)}
    return {k: v for k, v in vars(args).items() if k in names}


def add_read_options(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --data-url, --label-column, --image-size: the same fields and help as `train`,
    defaulting to the run's own values."""
    group = parser.add_argument_group("data options (default: the run's own)")
    extra = {"label_column": f"; {NO_LABELS}: the data has no label column"}
    for f in fields(DataConfig):
        if f.name in READ_FIELDS:
            add_field_option(group, f, "the run's", extra.get(f.name, ""))


def read_options(args: argparse.Namespace) -> dict[str, Any]:
    """The data options given on the command line, as DataConfig values."""
    given = {k: getattr(args, k) for k in READ_FIELDS if hasattr(args, k)}
    if given.get("label_column") == NO_LABELS:
        given["label_column"] = None
    return given


def add_compute_options(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """--threads (and --device for commands that run the model): TrainConfig's fields, one check."""
    group = parser.add_argument_group("compute options")
    for f in fields(TrainConfig):
        if f.name == "threads" or (device and f.name == "device"):
            add_field_option(group, f, "the run's" if f.name == "device" else None)
    parser.set_defaults(threads=None, **({"device": None} if device else {}))


def load_run(args: argparse.Namespace, which: str = "best"):
    """Apply --threads, then load RUN_DIR on --device (default: the run's own device), both checked
    by runtime.py so every command accepts and rejects the same values."""
    from ..runs import load, read_config

    set_threads(getattr(args, "threads", None))
    run_dir = Path(args.run_dir)
    name = getattr(args, "device", None)
    if name is None:  # the run's own device; a missing folder is reported by load()
        name = read_config(run_dir).train.device if run_dir.is_dir() else "cpu"
    return load(run_dir, which, device=str(resolve_device(name)))


def add_seed_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--seed", type=int, default=0, help=f"seed of {what} (default: 0)")


def check_seed_option(args: argparse.Namespace) -> None:
    check_seed(args.seed)
