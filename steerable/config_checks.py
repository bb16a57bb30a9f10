"""Fail-fast checks of a composed run config, and secret redaction for everything we log.

Three checks run before anything is built:

1. :func:`check_override_choices` — a command-line ``group=option`` names an existing
   ``conf/<group>/<option>.yaml`` (Hydra's own message lists search paths over many lines).
2. :func:`check_config` — top-level keys are known, and every node with a ``_target_`` only uses
   keyword arguments its target accepts (so ``+model.kernal=…`` fails); arguments annotated
   ``Literal[...]`` must take one of the listed values (so ``model.kernel=foo`` fails).
3. :func:`redact_secrets` — keys that look like credentials are replaced before a config is
   logged to W&B, written to metrics or stored in a checkpoint.

This module does not import Hydra: it works on plain dicts and the ``conf/`` directory.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
TOP_LEVEL_KEYS = frozenset({
    "task_name", "tags", "seed", "train", "test", "ckpt_path", "resume",
    "paths", "group", "dataset", "model", "task", "trainer", "logger", "callbacks", "hydra",
})
SECRET_PATTERN = re.compile(r"(api_?key|token|secret|password|passwd|credential)", re.IGNORECASE)
REDACTED = "<redacted>"


class ConfigError(ValueError):
    """A config problem the user can fix; entrypoints print it as one ``error: …`` line."""


def _suggest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def search_dirs(overrides: Iterable[str], conf_dir: Path) -> list[Path]:
    """``conf_dir``, the ``file://`` folders of a ``hydra.searchpath=[…]`` override, and a
    ``--config-dir``/``-cd`` folder (``--config-dir DIR`` or ``--config-dir=DIR``)."""
    dirs, args = [conf_dir], list(overrides)
    for i, arg in enumerate(args):
        if arg.startswith("hydra.searchpath="):
            dirs += [Path(p) for p in re.findall(r"file://([^,\]\s]+)", arg)]
        elif arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith(("--config-dir=", "-cd=")):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


def check_override_choices(overrides: Iterable[str], conf_dir: Path) -> None:
    """Check command-line ``group=option`` overrides against the config files.

    Only groups that are folders of ``conf_dir`` (or of an added ``hydra.searchpath``) are checked;
    Hydra's own groups such as ``hydra/launcher`` are left to Hydra. Simple choice sweeps
    ``group=a,b`` are checked item by item.

    Raises:
        ConfigError: naming the group, the unknown option and the valid options.
    """
    overrides = list(overrides)
    dirs = search_dirs(overrides, conf_dir)
    pattern = re.compile(r"^\+{0,2}(?P<group>[A-Za-z_][\w/]*)(@[\w.]+)?=(?P<value>[^=]*)$")
    for override in overrides:
        match = pattern.match(override)
        if match is None:
            continue
        group_dirs = [d / match["group"] for d in dirs if (d / match["group"]).is_dir()]
        value = match["value"].strip()
        if not group_dirs or value in ("", "null") or "(" in value:
            continue
        valid = sorted({p.stem for d in group_dirs for p in d.glob("*.yaml")})
        for option in value.split(","):
            if option.strip() not in valid:
                raise ConfigError(
                    f"unknown {match['group']} {option.strip()!r}{_suggest(option.strip(), valid)}; "
                    f"valid: {', '.join(valid)}"
                )


def locate(path: str) -> Any:
    """Import ``package.module.Attr`` (also nested attributes such as ``torch.optim.AdamW``)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {path!r}")


def _signature_params(target: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """Keyword parameters of a callable/class and whether it takes ``**kwargs``."""
    params = dict(inspect.signature(target).parameters)
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: p for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}, takes_kwargs


def _literal_choices(target: Any) -> dict[str, tuple]:
    """Arguments annotated ``Literal[...]`` → their allowed values (empty if hints don't resolve)."""
    func = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: skip the value check, keep the key check
        return {}
    choices = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is typing.Literal:
            choices[name] = typing.get_args(hint)
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(hint) if a is not type(None)]
            if members and all(typing.get_origin(a) is typing.Literal for a in members):
                allowed = tuple(v for lit in members for v in typing.get_args(lit))
                if type(None) in typing.get_args(hint):
                    allowed += (None,)
                choices[name] = allowed
    return choices


def _check_target_node(node: Mapping[str, Any], key: str) -> None:
    try:
        target = locate(str(node["_target_"]))
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{key}._target_: cannot import {node['_target_']!r} ({err})") from None
    params, takes_kwargs = _signature_params(target)
    if not takes_kwargs:
        for name in node:
            if name not in params and name not in HYDRA_KEYS:
                valid = sorted(params)
                raise ConfigError(
                    f"unknown key '{key}.{name}' for {node['_target_']}{_suggest(name, valid)}; "
                    f"valid keys: {', '.join(valid)}"
                )
    for name, allowed in _literal_choices(target).items():
        if name in node and node[name] not in allowed:
            raise ConfigError(
                f"invalid value {key}.{name}={node[name]!r}; valid: {', '.join(map(str, allowed))}"
            )


def _walk_targets(node: Any, key: str) -> None:
    if isinstance(node, Mapping):
        if "_target_" in node:
            _check_target_node(node, key)
        for name, child in node.items():
            _walk_targets(child, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            _walk_targets(child, f"{key}[{i}]")


def conv_option_names() -> set[str]:
    """Keys ``model.conv`` may hold: options of the implicit conv and its kernel, or of the analytic conv."""
    from steerable.kernels.implicit import ImplicitKernel
    from steerable.nn.analytic import AnalyticPointConv
    from steerable.nn.point_conv import ImplicitPointConv

    names = set()
    for target in (ImplicitPointConv, ImplicitKernel, AnalyticPointConv):
        names |= set(_signature_params(target)[0])
    return names - {"self", "group", "in_type", "out_type", "attr_type", "edge_attr_type", "node_attr_type"}


def _check_conv_options(conv: Any) -> None:
    """``model.conv`` is a plain dict handed to the convolutions: a misspelt key would be ignored
    (analytic) or fail deep inside the model (implicit)."""
    if not isinstance(conv, Mapping):
        return
    valid = sorted(conv_option_names())
    for name in conv:
        if name not in valid:
            raise ConfigError(f"unknown key 'model.conv.{name}'{_suggest(name, valid)}; valid keys: "
                              f"{', '.join(valid)}")


def _check_group(group: Any) -> None:
    """``group`` holds only keys :func:`steerable.groups.build_group` knows, and ``N`` only where the
    group has a rotation order (a stray key would otherwise be dropped, or fail deep inside the model)."""
    from steerable.groups import GroupError, check_group_options

    if not isinstance(group, Mapping):
        return
    try:
        check_group_options(group)
    except GroupError as err:
        raise ConfigError(str(err)) from None


def check_config(cfg: Mapping[str, Any]) -> None:
    """Validate a resolved run config (a plain dict without the ``hydra`` node).

    Raises:
        ConfigError: on an unknown top-level key, a missing required group, an unknown ``group`` key
            (or ``group.N`` for a group without one), an argument a ``_target_`` does not accept, or a
            value outside a ``Literal[...]`` annotation.
    """
    for name in cfg:
        if name not in TOP_LEVEL_KEYS:
            raise ConfigError(f"unknown top-level key {name!r}{_suggest(name, TOP_LEVEL_KEYS)}")
    for name in ("dataset", "model", "task", "trainer"):
        if not isinstance(cfg.get(name), Mapping) or "_target_" not in cfg[name]:
            raise ConfigError(f"config group {name!r} is missing or has no _target_; pick one with {name}=…")
    if cfg.get("resume") not in ("auto", "never"):
        raise ConfigError(f"invalid value resume={cfg.get('resume')!r}; valid: auto, never")
    _check_group(cfg.get("group"))
    for name in ("dataset", "model", "task", "trainer", "logger", "callbacks"):
        _walk_targets(cfg.get(name), name)
    _check_conv_options(cfg["model"].get("conv"))


def redact_secrets(node: Any, secret_values: list[str] | None = None) -> Any:
    """Copy of a plain config tree with credentials redacted.

    Redacted: values under credential-like keys (``api_key``, ``token``…), and any string that
    contains the value of a credential-like environment variable (``WANDB_API_KEY``…, values of 8+
    characters), e.g. a key pasted into ``logger.wandb.notes`` or interpolated with ``${oc.env:…}``.
    """
    if secret_values is None:
        secret_values = [v for k, v in os.environ.items() if SECRET_PATTERN.search(k) and len(v) >= 8]
    if isinstance(node, Mapping):
        return {k: (REDACTED if SECRET_PATTERN.search(str(k)) and v not in (None, "")
                    else redact_secrets(v, secret_values))
                for k, v in node.items()}
    if isinstance(node, list):
        return [redact_secrets(v, secret_values) for v in node]
    if isinstance(node, str) and any(secret in node for secret in secret_values):
        return REDACTED
    return node
