"""YAML configuration files for the training script, merged with argparse (flags on the command line win).

A configuration file is a flat mapping whose keys are the script's flag names without the leading dashes
(``learning_rate: 5.0e-6``). Each value is turned into the tokens a user would type (``--learning_rate=5e-06``) and
parsed by the script's own parser, so it goes through the same conversion and ``choices`` check as the flag would:
a file cannot smuggle in a value the command line would refuse, and a key that names no flag is an error rather
than a silently ignored typo. Switches (``store_true``) take ``true`` / ``false``, list flags (``nargs``) a YAML
list or one value, and any flag ``null`` (None).
"""

import argparse
import difflib
import os
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ..errors import InputNotFoundError, InvalidArgumentError, OneLineArgumentParser

CONFIG_FLAG = "config"

# argparse actions whose value is a boolean switch, not a typed argument
_SWITCH_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)


def load_yaml_config(path: str) -> Dict[str, Any]:
    """Reads a flat YAML mapping of flag names to values.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a YAML mapping with string keys.
    """
    if not os.path.isfile(path):
        raise InputNotFoundError(f"configuration file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            content = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise InvalidArgumentError(f"configuration file {path!r} is not valid YAML: {error}") from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise InvalidArgumentError(
            f"configuration file {path!r} must hold a mapping of flag names to values, got a {type(content).__name__}"
        )
    for key in content:
        if not isinstance(key, str):
            raise InvalidArgumentError(f"configuration file {path!r}: keys must be flag names (strings), got {key!r}")
    return content


def _actions_by_dest(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.dest != argparse.SUPPRESS}


def _token(action: argparse.Action, value: Any, where: str) -> str:
    """One YAML value as the user would type it. PyYAML reads ``5e-6`` and ``1e4`` as strings (YAML 1.1 floats
    need a dot and a signed exponent) and ``1.0e4`` as a float: an int flag takes all of them when integral."""
    if isinstance(value, (dict, list)):
        raise InvalidArgumentError(f"{where}: expected a single value, got {value!r}")
    if isinstance(value, bool) and action.type in (int, float):
        raise InvalidArgumentError(f"{where}: expected a number, got the boolean {value!r}")
    if action.type is int and isinstance(value, (str, float)):
        try:
            number = float(value)
        except ValueError:
            number = None  # argparse names it below
        if number is not None and number.is_integer():
            return str(int(number))
    return str(value)


def _parse_value(parser: argparse.ArgumentParser, action: argparse.Action, value: Any, where: str) -> Any:
    """Converts one YAML value by parsing its tokens with ``parser``, as the same flag on the command line."""
    if isinstance(action, _SWITCH_ACTIONS):
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"{where}: expected true or false, got {value!r}")
        return value  # the flag's value itself: nothing to convert
    if value is None:
        return None
    option = max(action.option_strings, key=len)
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        tokens: List[str] = [option] + [_token(action, item, where) for item in items]
    else:
        tokens = [f"{option}={_token(action, value, where)}"]  # '=' keeps a value such as '-1' a value
    exit_on_error = parser.exit_on_error
    parser.exit_on_error = False  # argparse raises ArgumentError instead of exiting
    try:
        namespace, _ = parser.parse_known_args(tokens, namespace=argparse.Namespace())
    except argparse.ArgumentError as error:
        raise InvalidArgumentError(f"{where}: {error.message}") from None
    finally:
        parser.exit_on_error = exit_on_error
    return getattr(namespace, action.dest)


def parse_args_with_config(
    parser: argparse.ArgumentParser, input_args: Optional[Sequence[str]] = None
) -> argparse.Namespace:
    """Parses ``input_args`` (``sys.argv[1:]`` when None) with defaults taken from ``--config FILE.yaml``.

    Precedence: command-line flags > configuration file > the parser's defaults. The parser must define
    ``--config``. The returned namespace keeps ``config`` (the file's path, or None).

    Raises:
        ValueError: a key names no flag (the message names the key and the closest flag), or a value does not
            convert to the flag's type / choices (the message names the file, the key and argparse's complaint).
        FileNotFoundError: the configuration file does not exist.
    """
    actions = _actions_by_dest(parser)
    if CONFIG_FLAG not in actions:
        raise ValueError(f"the parser must define --{CONFIG_FLAG} to read configuration files")

    # First pass: only find the configuration file; everything else is parsed once its values are the defaults.
    config_only = OneLineArgumentParser(prog=parser.prog, add_help=False, allow_abbrev=False)
    config_only.add_argument(f"--{CONFIG_FLAG}", type=str, default=None)
    known, _ = config_only.parse_known_args(input_args)

    if known.config is not None:
        file_values = load_yaml_config(known.config)
        defaults = {}
        for key, value in file_values.items():
            if key == CONFIG_FLAG:
                raise InvalidArgumentError(
                    f"{known.config}: a configuration file cannot name another one (key {key!r})"
                )
            if key not in actions:
                suggestion = difflib.get_close_matches(key, list(actions), n=1)
                hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
                raise InvalidArgumentError(
                    f"{known.config}: unknown key {key!r}{hint}; keys are the script's flag names"
                )
            defaults[key] = _parse_value(parser, actions[key], value, f"{known.config}: key {key!r}")
        # Defaults set here are overridden by any flag given on the command line, which is the precedence we want.
        parser.set_defaults(**defaults)
    return parser.parse_args(input_args)
