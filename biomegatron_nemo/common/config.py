"""Typed config schemas: one dataclass per config section, checked before anything is built.

Every config section (tokenizer, encoder, each dataset, head, loss, optimiser, pipeline, parallel
layout) is a dataclass next to the code it configures; each field's default and one-line doc live
there only (:func:`option`). Models and example scripts check what they are given with
:func:`validate_config`, which

* fills in the schema's defaults,
* refuses an unknown or misspelt key, naming it with its full path and the closest known key
  (``train_ds.batchsize`` → "did you mean train_ds.batch_size?") — Hydra's command line does this
  for overrides, but a config built in Python or read from a YAML file is checked by nothing else;
* refuses a value of the wrong type (OmegaConf's structured-config type check), and
* runs each dataclass's ``check()`` for ranges and choices, prefixing its messages with the key,

and returns the dataclass, which code then reads (:func:`merged_config` gives the DictConfig a NeMo
model saves).

OmegaConf/Hydra structured configs do the merging and typing; this module adds the path-naming
errors and the range checks they lack. :func:`schema_table` renders a schema as the Markdown
tables of ``docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Type

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from biomegatron_nemo.common.errors import ConfigError

#: Keys NeMo's ModelPT adds to a model config itself; they pass through unchecked.
NEMO_MANAGED_KEYS = ("target", "nemo_version")


def option(default: Any = dataclasses.MISSING, doc: str = "", *, factory=None, choices: Sequence = ()):
    """A schema field with its one-line ``doc`` (and, for strings, the allowed ``choices``).

    Mutable defaults (lists, dicts, nested sections) go through ``factory``.
    """
    metadata = {"doc": doc, "choices": tuple(choices)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, doc: str = ""):
    """A nested section field defaulting to the section schema's own defaults.

    The default is built from the class's field defaults, without running its ``__post_init__``
    (which may resolve defaults, e.g. an encoder preset's sizes, that a user's values must still
    be able to change).
    """
    return option(doc=doc, factory=lambda: OmegaConf.structured(cls))


class Schema:
    """Base of the schema dataclasses: ``check()`` raises :class:`ConfigError` for bad values.

    ``choices`` of a field (see :func:`option`) are checked for every schema; a subclass adds
    its own rules in ``check``, raising ``ConfigError(message, key="field")``.
    """

    def check(self) -> None:
        pass


def to_plain(cfg: Any, resolve: bool = True) -> Any:
    """A DictConfig/ListConfig (or a mapping holding them) as plain ``dict``/``list`` values.

    The one config-to-dict conversion of the package.
    """
    if cfg is None:
        return None
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=resolve)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, Mapping):
        return {k: to_plain(v, resolve) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_plain(v, resolve) for v in cfg]
    return cfg


def _known_keys(schema: type) -> List[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _section_schema(schema: type, path: Sequence[str]) -> Optional[type]:
    """The dataclass of the section at ``path`` below ``schema`` (None when it is not one)."""
    for name in path:
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return None
        hints = typing.get_type_hints(schema)
        if name not in hints:
            return None
        schema = _unwrap_optional(hints[name])
    return schema if isinstance(schema, type) and dataclasses.is_dataclass(schema) else None


def _unwrap_optional(tp):
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _unknown_key_error(schema: type, full_key: str, where: str) -> ConfigError:
    parts = full_key.split(".")
    parent = _section_schema(schema, parts[:-1])
    known = _known_keys(parent) if parent is not None else []
    close = difflib.get_close_matches(parts[-1], known, n=1)
    prefix = ".".join(parts[:-1])
    hint = f"; did you mean {'.'.join(filter(None, [prefix, close[0]]))}?" if close else ""
    listing = f" Known keys{' of ' + prefix if prefix else ''}: {', '.join(known)}." if known else ""
    return ConfigError(f"unknown key{hint}{listing}", key=full_key, where=where)


def _full_key(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or ""
    return str(key)


def _failing_section(node: DictConfig, path: str = "") -> str:
    """The path of the innermost section of ``node`` whose construction raises ConfigError."""
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and OmegaConf.get_type(child) not in (dict, None):
            try:
                OmegaConf.to_object(child)
            except ConfigError:
                return _failing_section(child, f"{path}.{key}" if path else str(key))
            except OmegaConfBaseException:
                pass
    return path


def _walk_checks(obj: Any, path: str, where: str) -> None:
    """Run ``check()`` and the ``choices`` of every section, depth first, naming keys by path."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{path}.{f.name}" if path else f.name
        choices = f.metadata.get("choices") or ()
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{value!r} is not one of {list(choices)}", key=key, where=where)
        if dataclasses.is_dataclass(value):
            _walk_checks(value, key, where)
        elif isinstance(value, dict):
            for k, v in value.items():
                _walk_checks(v, f"{key}.{k}", where)
    if isinstance(obj, Schema):
        try:
            obj.check()
        except ConfigError as err:
            if err.where:  # raised by a nested call that already named its place
                raise
            inner = f"{path}.{err.key}" if path and err.key else (err.key or path)
            raise ConfigError(err.reason, key=inner, where=where) from None


def _checked(cfg: Any, schema: Type, where: str, passthrough: Iterable[str] = ()):
    """``(the dataclass, the merged DictConfig)`` of ``cfg`` checked against ``schema``."""
    if cfg is None:
        cfg = {}
    if isinstance(cfg, DictConfig):
        given = OmegaConf.to_container(cfg, resolve=False)
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        given = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False)
    elif isinstance(cfg, Mapping):
        given = to_plain(cfg, resolve=False)
    else:
        raise ConfigError(f"expected a mapping, got {type(cfg).__name__}", where=where)
    kept = {k: given.pop(k) for k in list(given) if k in passthrough}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), given)
        try:
            checked = OmegaConf.to_object(merged)  # resolves interpolations, builds the dataclasses
        except ConfigError as err:  # raised by a section's __post_init__, which knows no path
            inner = ".".join(filter(None, [_failing_section(merged), err.key]))
            raise ConfigError(err.reason, key=inner or None, where=where) from None
    except ConfigKeyError as err:
        raise _unknown_key_error(schema, _full_key(err), where) from None
    except ValidationError as err:
        message = str(err).splitlines()[0]
        raise ConfigError(f"wrong type or value: {message}", key=_full_key(err), where=where) from None
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0], key=_full_key(err) or None, where=where) from None
    _walk_checks(checked, "", where)
    result = OmegaConf.create(OmegaConf.to_container(merged, resolve=False))
    if kept:
        result.merge_with(kept)
    OmegaConf.set_struct(result, True)
    return checked, result


def validate_config(cfg: Any, schema: Type, where: str = "config", passthrough: Iterable[str] = ()):
    """``cfg`` (a mapping, DictConfig or dataclass) merged onto ``schema``'s defaults, checked, and
    built as the schema's dataclass — what code reads (typed, every value checked once, here).

    ``where`` names the config in messages (e.g. ``TokenClassificationModel``); ``passthrough``
    keys (those NeMo adds to a model config) are left out.
    """
    return _checked(cfg, schema, where, passthrough)[0]


def merged_config(cfg: Any, schema: Type, where: str = "config", passthrough: Iterable[str] = ()) -> DictConfig:
    """``cfg`` checked as :func:`validate_config` does, as the plain (struct) DictConfig a NeMo model
    keeps and saves: the schema's defaults filled in, interpolations (``${...}``) left as given,
    ``passthrough`` keys (those NeMo manages) kept unchecked."""
    return _checked(cfg, schema, where, passthrough)[1]


def defaults_of(schema: Type) -> Dict[str, Any]:
    """The schema's defaults as plain values (``???`` for required fields)."""
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)


def _type_name(tp) -> str:
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin in (list, List):
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(arg)}"
    if origin in (dict, Dict):
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _yaml_value(value: Any) -> str:
    if value == "???":
        return "required"
    if isinstance(value, (list, tuple, ListConfig)):  # one line: a table cell
        import yaml

        return f"`{yaml.safe_dump(to_plain(value), default_flow_style=True).strip()}`"
    return f"`{OmegaConf.to_yaml({'v': value}).strip()[3:]}`"


def flatten(values: Mapping, prefix: str = "") -> List[tuple]:
    """``(dotted.key, value)`` for every leaf of a nested mapping (an empty mapping is a leaf)."""
    rows = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def schema_table(schema: Type, prefix: str = "") -> List[str]:
    """Markdown rows ``| key | type | default | meaning |`` for every leaf of ``schema`` (the
    entries of an open mapping's default, e.g. ``trainer``, one row each)."""
    rows: List[str] = []
    hints = typing.get_type_hints(schema)
    defaults = defaults_of(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        tp = _unwrap_optional(hints[f.name])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows += schema_table(tp, key + ".")
            continue
        default = defaults[f.name]
        doc = f.metadata.get("doc", "")
        choices = f.metadata.get("choices") or ()
        if choices:
            doc += " (" + " \\| ".join(map(str, choices)) + ")"
        if isinstance(default, Mapping) and default:
            rows += [f"| `{k}` | any | {_yaml_value(v)} | {doc} |" for k, v in flatten(default, key + ".")]
            continue
        rows.append(f"| `{key}` | {_type_name(hints[f.name])} | {_yaml_value(default)} | {doc} |")
    return rows
