"""YAML configuration files for the training script, merged with argparse (flags on the command line win).

A configuration file is a flat mapping whose keys are the script's flag names without the leading dashes
(``learning_rate: 5.0e-6``). Every value goes through the same conversion and ``choices`` check as the flag would,
so a file cannot smuggle in a value the command line would refuse, and a key that names no flag is an error rather
than a silently ignored typo.
"""

import argparse
import difflib
import os
from typing import Any, Dict, Optional, Sequence

import yaml

from ..errors import OneLineArgumentParser

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
        raise FileNotFoundError(f"configuration file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            content = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"configuration file {path!r} is not valid YAML: {error}") from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ValueError(
            f"configuration file {path!r} must hold a mapping of flag names to values, got a {type(content).__name__}"
        )
    for key in content:
        if not isinstance(key, str):
            raise ValueError(f"configuration file {path!r}: keys must be flag names (strings), got {key!r}")
    return content


def _actions_by_dest(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.dest != argparse.SUPPRESS}


def _coerce_scalar(action: argparse.Action, value: Any, where: str) -> Any:
    if value is None:
        return None
    converter = action.type
    if converter is None:
        converter = str
    # PyYAML reads ``5e-6`` and ``1.0e4`` as strings (YAML 1.1 floats need a dot and a signed exponent) and
    # ``1.0e+4`` as a float: route all through the flag's own type, accept integral scientific notation for int
    # flags, but never let an int flag swallow a fractional number or a string flag swallow a mapping.
    if converter is int and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                pass  # reported below, as int() sees it
    if converter is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        value = int(value)
    if isinstance(value, bool) and converter in (int, float):
        raise ValueError(f"{where}: expected a number, got the boolean {value!r}")
    if isinstance(value, (dict, list)):
        raise ValueError(f"{where}: expected a single value, got {value!r}")
    try:
        converted = converter(value if converter is not str else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
        raise ValueError(f"{where}: cannot read {value!r} as {getattr(converter, '__name__', converter)}: {error}")
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{where}: expected one of {sorted(map(str, action.choices))}, got {converted!r}")
    return converted


def coerce_config_value(action: argparse.Action, value: Any, source: str) -> Any:
    """Converts one YAML value as argparse would convert the same flag given on the command line."""
    where = f"{source}: key {action.dest!r}"
    if isinstance(action, _SWITCH_ACTIONS):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        if value is None:
            return None
        values = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not values:
            raise ValueError(f"{where}: expected at least one value, got an empty list")
        if isinstance(action.nargs, int) and len(values) != action.nargs:
            raise ValueError(f"{where}: expected {action.nargs} values, got {len(values)}")
        return [_coerce_scalar(action, item, where) for item in values]
    return _coerce_scalar(action, value, where)


def parse_args_with_config(
    parser: argparse.ArgumentParser, input_args: Optional[Sequence[str]] = None
) -> argparse.Namespace:
    """Parses ``input_args`` (``sys.argv[1:]`` when None) with defaults taken from ``--config FILE.yaml``.

    Precedence: command-line flags > configuration file > the parser's defaults. The parser must define
    ``--config``. The returned namespace keeps ``config`` (the file's path, or None).

    Raises:
        ValueError: a key names no flag (the message names the key and the closest flag), or a value does not
            convert to the flag's type / choices.
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
                raise ValueError(f"{known.config}: a configuration file cannot name another one (key {key!r})")
            if key not in actions:
                suggestion = difflib.get_close_matches(key, list(actions), n=1)
                hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
                raise ValueError(f"{known.config}: unknown key {key!r}{hint}; keys are the script's flag names")
            defaults[key] = coerce_config_value(actions[key], value, known.config)
        # Defaults set here are overridden by any flag given on the command line, which is the precedence we want.
        parser.set_defaults(**defaults)
    return parser.parse_args(input_args)

