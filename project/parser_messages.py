"""Reading jsonargparse's error reports: the key that is wrong, then what is wrong with it.

jsonargparse reports a bad value deep in a config as a nested search over every
type it tried, and a constructor's error wrapped in that search. These functions
keep the key and the reason, and name the file and line of a YAML syntax error.
Only a run that fails imports this module (:class:`project.errors.ProjectArgumentParser`
and the CLI call it on an error).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Lines of jsonargparse's nested messages that describe its search, not the problem.
_SEARCH_NOTES = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: |Errors:|"
    r"Given value type: |Expected a <class 'NoneType'>|Expected a path but )"
)


def error_report(parser: Any, message: str, ex: Exception | None) -> str:
    """What the command line shows for a parser error: one line naming the key, then a hint.

    A config file that is not valid YAML is named with its line instead.
    """
    if problem := yaml_syntax_error(config_files(parser.command_line)):
        return f"error: {problem}\n"
    command = (getattr(ex, "subcommand_parser", None) or parser).prog.replace(" [options]", "")
    line = short_parser_error(message)
    if re.search(r"^(model|data)\b.*: required|required: (\w+\.)?(model|data)\b", line):
        line += (
            "; a config that changes only a few keys is an overlay: give "
            "configs/default.yaml (or another whole config) before it"
        )
    return (
        f"error: {line}\n"
        f"  ({command} --help lists the options; JSONARGPARSE_DEBUG=1 shows the full message)\n"
    )


def short_parser_error(message: str) -> str:
    """One line from jsonargparse's nested error: the full key, then what is wrong with it.

    For example ``model.init_args.net.init_args.widthz: not an argument of
    project.models.ConvNet``. Messages that are already one line pass through.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    found = re.match(r'Parser key "([^"]+)":\s*(.*)$', lines[0]) if lines else None
    if found is None:
        return lines[0] if lines else message
    key, reason = found[1], found[2]
    if reason:
        return f"{key}: {reason}"
    owner, expected, given = None, [], None
    for line in lines[1:]:
        text = line.removeprefix("- ")
        if text.startswith("Given value: "):
            given = given if given is not None else text.removeprefix("Given value: ")
            continue
        if _SEARCH_NOTES.match(text):
            continue
        if nested := re.match(r"Problem with given class_path \'([^\']+)\':$", text):
            owner = nested[1]
            continue
        if nested := re.match(r'Parser key "([^"]+)":\s*(.*)$', text):
            key += f".init_args.{nested[1]}" if owner else f".{nested[1]}"
            owner = None
            if nested[2]:
                return f"{key}: {nested[2]}"
            continue
        if simple := re.match(r"Expected a <class '(\w+)'>$", text):
            expected.append(simple[1])
            continue
        return _leaf(key, owner, text)
    if expected:
        return f"{key}: expected {' or '.join(expected)}, got {given!r}"
    return lines[0]


def _leaf(key: str, owner: str | None, text: str) -> str:
    """The line for the innermost reason ``text`` found under ``key``."""
    if option := re.search(r"Option '([^']+)' is not accepted", text):
        named = re.search(r"class_path='([^']+)'", text)
        owner = named[1] if named else owner
        return f"{key}.init_args.{option[1]}: not an argument of {owner or key}"
    if required := re.match(r"the following arguments are required: (.+)$", text):
        return f"{key}{'.init_args' if owner else ''}.{required[1]}: required, but not given"
    if wrong := re.match(r"Expected a <class '(\w+)'>\. Got value: (.*)$", text):
        return f"{key}: expected {wrong[1]}, got {wrong[2]!r}"
    if owner:
        return f"{key}: cannot import class_path {owner!r} ({text})"
    return f"{key}: {text}"


def constructor_error(error: BaseException) -> tuple[BaseException, str | None]:
    """The exception under jsonargparse's wrappers, and the class_path whose constructor raised."""
    owner = None
    while error.__cause__ is not None and str(error).startswith(_WRAPPERS):
        if named := re.search(r"class_path='([^']+)'", str(error)):
            owner = named[1]
        error = error.__cause__
    return error, owner


def instantiation_error(error: ValueError) -> str:
    """The line for a constructor's bad-input error (a missing data root) that jsonargparse
    wrapped in its type search; any other error is raised as it is."""
    original, owner = constructor_error(error)
    if original is error:
        raise error
    if not isinstance(original, (ValueError, OSError)):
        raise original from None
    return f"{owner + ': ' if owner else ''}{original}"


# How jsonargparse's reports of a failed instantiation begin.
_WRAPPERS = ("Does not validate against any of the Union subtypes", "Problem with given class_path")


def config_files(args: Sequence[Any]) -> list[str]:
    """The files given with ``--config FILE`` or ``--config=FILE`` in command-line ``args``."""
    files = []
    for index, arg in enumerate(args):
        if not isinstance(arg, str):
            continue
        if arg == "--config" and index + 1 < len(args):
            files.append(str(args[index + 1]))
        elif arg.startswith("--config="):
            files.append(arg.removeprefix("--config="))
    return files


def undecodable_file(files: Sequence[str]) -> str | None:
    """The first of ``files`` that is not UTF-8 text, named with the byte that is not.

    jsonargparse lets the decoding error through as a traceback that names no file.
    """
    for name in files:
        try:
            Path(name).read_text(encoding="utf-8")
        except OSError:
            continue
        except UnicodeDecodeError as error:
            return (
                f"{name}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                f"{error.start}); save the config as UTF-8"
            )
    return None


def yaml_syntax_error(files: Sequence[str]) -> str | None:
    """The first of ``files`` that is not valid YAML, as ``FILE:LINE:COLUMN: problem``.

    jsonargparse reports a syntax error without the file or the line; this names both.
    Files that cannot be read are left to jsonargparse, which names them.
    """
    import yaml

    for name in files:
        try:
            text = Path(name).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        try:
            yaml.safe_load(text)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
            context = f" ({error.context})" if error.context else ""
            return f"{where}: not valid YAML: {error.problem}{context}"
        except yaml.YAMLError as error:
            return f"{name}: not valid YAML: {' '.join(str(error).split())}"
    return None
