"""Load and validate the study's config against workflow/schemas/config.schema.yaml.

    from lib.config import validate_config, ConfigError
    cfg = validate_config(raw_dict)        # defaults filled in; raises ConfigError
    python -m lib.config presets/demo.yaml  # check a file from the shell

A ConfigError carries one message per problem, each naming the key, the bad value and
the allowed values, so a user can fix the file without reading the schema.
"""
import copy
import difflib
import os
import re
import sys

import jsonschema
import yaml

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "workflow", "schemas", "config.schema.yaml")


PATH_PATTERN = "^[A-Za-z0-9_./~+-]+$"  # data_dir's pattern in the schema

# Built-in external_model_sets: the Outlier Exposure authors' MNIST checkpoints
# (hendrycks/outlier-exposure, MNIST/snapshots/, Apache-2.0), pinned by sha256.
_OE_SNAPSHOTS = "https://raw.githubusercontent.com/hendrycks/outlier-exposure/master/MNIST/snapshots/"
EXTERNAL_MODEL_SETS = {"oe_paper": {
    "oe_paper_baseline": {"url": _OE_SNAPSHOTS + "baseline/baseline_epoch_9.pt",
                          "sha256": "3184bed452c44c82935b96be23f5bf08d9dffec348b7222c01dc6088ebd46a4c",
                          "label": "OE paper baseline"},
    "oe_paper_oe": {"url": _OE_SNAPSHOTS + "oe_scratch/oe_scratch_epoch_9.pt",
                    "sha256": "635577055a9f10fd4a53c784a6bbf40f96fb51535eba65fedeea23d8d4296805",
                    "label": "OE paper OE scratch"},
    "oe_paper_oe_tune": {"url": _OE_SNAPSHOTS + "oe_tune/oe_tune_epoch_4.pt",
                         "sha256": "362ccfe3c829610791cc3ed8bbfe98fcc30bd6a9c582ea5fc08a5f8fb8531bb5",
                         "label": "OE paper OE tune"},
}}
for _entry in EXTERNAL_MODEL_SETS["oe_paper"].values():
    _entry.update(architecture="oe_convnet", input="unit")  # their network took ToTensor()'s [0, 1]
EXTERNAL_DEFAULTS = {"input": "unit", "num_classes": 10}


class ConfigError(ValueError):
    pass


def load_schema(path=SCHEMA_PATH):
    with open(path) as f:
        return yaml.safe_load(f)


def _key(path):
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _did_you_mean(name, siblings, schema):
    """A near spelling among the allowed keys, or the section one level down that has this key."""
    close = difflib.get_close_matches(str(name), siblings, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    for section, sub in schema.get("properties", {}).items():
        if name in sub.get("properties", {}):
            return f" (did you mean '{section}.{name}'?)"
    return ""


def _describe(error):
    key = _key(error.absolute_path)
    v, s = error.validator, error.schema
    if v == "enum":
        allowed = ", ".join(map(str, s["enum"]))
        return f"config key '{key}': {error.instance!r} is not allowed; allowed values: {allowed}"
    if v == "additionalProperties":
        allowed = ", ".join(sorted(s.get("properties", {})))
        extra = sorted(set(error.instance) - set(s.get("properties", {})))
        where = f"under '{key}'" if error.absolute_path else "at the top level"
        hints = "".join(_did_you_mean(e, sorted(s.get("properties", {})), s) for e in extra[:1])
        return (f"config key {', '.join(repr(_key([*error.absolute_path, e])) for e in extra)}: unknown key "
                f"{where}{hints}; allowed keys: {allowed}")
    if v == "type":
        allowed = f", one of: {', '.join(map(str, s['enum']))}" if "enum" in s else ""
        return f"config key '{key}': {error.instance!r} has the wrong type; expected {s['type']}{allowed}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bounds = ", ".join(f"{b} {s[b]}" for b in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if b in s)
        return f"config key '{key}': {error.instance!r} is out of range; allowed: {bounds}"
    if v == "minItems":
        return f"config key '{key}': the list is empty; give at least {s['minItems']} entry"
    if v == "uniqueItems":
        return f"config key '{key}': {error.instance!r} lists an entry twice"
    if v == "pattern" and s["pattern"] == PATH_PATTERN:
        return (f"config key '{key}': {error.instance!r} contains characters that are not allowed "
                f"(allowed: letters, digits and _ . / ~ + -)")
    if v == "pattern":
        return f"config key '{key}': {error.instance!r} does not have the expected form (regular expression {s['pattern']})"
    return f"config key '{key}': {error.message}"


def _fill_defaults(schema, instance):
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(name), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[name])


def _expand_external_models(cfg):
    """external_models with the entries of external_model_sets added and defaults filled in."""
    problems = []
    models = {}
    for set_name in cfg.get("external_model_sets", []):
        for name, entry in EXTERNAL_MODEL_SETS[set_name].items():
            # A config validated before (the report re-reads it) already holds the set's entries.
            if name in cfg["external_models"] and cfg["external_models"][name] != _with_defaults(name, entry):
                problems.append(f"config key 'external_models.{name}': the name is taken by the built-in "
                                f"set {set_name!r} (external_model_sets); rename the entry")
            models[name] = dict(entry)
    for name, entry in cfg["external_models"].items():
        if not entry.get("path") and not entry.get("url"):
            problems.append(f"config key 'external_models.{name}': give the checkpoint's url or a local path")
        models[name] = dict(entry)
    cfg["external_models"] = {name: _with_defaults(name, entry) for name, entry in models.items()}
    return problems


def _with_defaults(name, entry):
    return {**EXTERNAL_DEFAULTS, "label": name, **entry}


def _cross_checks(cfg):
    problems = _expand_external_models(cfg)
    ood = cfg["ood_sets"]
    if any(o in ("oe", "oe_tune") for o in cfg["oe"]) and not cfg["outlier_exposure"].get("source"):
        problems.append("config key 'outlier_exposure.source': Outlier Exposure is requested in 'oe' "
                        "but no auxiliary source is set")
    if "oe_tune" in cfg["oe"] and "baseline" not in cfg["oe"]:
        problems.append("config key 'oe': oe_tune fine-tunes the baseline model, so 'baseline' must be listed too")
    if cfg["in_distribution"] in ood:
        problems.append(f"config key 'ood_sets': {cfg['in_distribution']!r} is the in-distribution set")
    if cfg["outlier_exposure"].get("source") == cfg["in_distribution"]:
        problems.append(f"config key 'outlier_exposure.source': {cfg['in_distribution']!r} is the "
                        "in-distribution set; choose auxiliary outliers from another source")
    if cfg["corruptions"] == "official" and cfg["in_distribution"] != "mnist":
        problems.append(f"config key 'corruptions': the official MNIST-C sets are corrupted MNIST test "
                        f"digits, so they do not measure a {cfg['in_distribution']!r} model; use "
                        f"corruptions: generated (the 15 corruptions applied to the {cfg['in_distribution']!r} "
                        "test set) or auto")
    mixing = cfg.get("pixmix", {}).get("mixing", {})
    if "pixmix" in cfg["augment"] and mixing.get("source") == "folder":
        folder = mixing.get("folder")
        if not folder or not os.path.isdir(os.path.expanduser(folder)):
            problems.append(f"config key 'pixmix.mixing.folder': {folder!r} is not an existing folder; "
                            "stage the mixing images there or use source: fractals")
    return problems


def validate_config(raw, schema=None):
    """Return a validated copy of `raw` with defaults filled in, or raise ConfigError."""
    schema = schema or load_schema()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, not {type(raw).__name__}")
    cfg = copy.deepcopy(raw)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        # One message per key: a value of the wrong type also misses the enum; the type message
        # lists the allowed values, so it alone is kept.
        per_key = {}
        for e in errors:
            where = tuple(map(str, e.absolute_path))
            if where not in per_key or (e.validator == "type" and per_key[where].validator != "type"):
                per_key[where] = e
        raise ConfigError("invalid config:\n  " + "\n  ".join(_describe(e) for e in per_key.values()))
    _fill_defaults(schema, cfg)
    if cfg.get("corruptions") == "auto":
        cfg["corruptions"] = "official" if cfg["in_distribution"] == "mnist" else "generated"
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return cfg


def load_config_file(path):
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}\nFix the line shown (mind indentation, "
                          f"colons and brackets) and rerun.") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None


class _CommandLineYaml(yaml.SafeLoader):
    """YAML as in a config file, plus exponent numbers without a dot (`1e-3`), which YAML 1.1
    leaves as text but Snakemake's own reading of a top-level value takes for a float."""


_CommandLineYaml.add_implicit_resolver("tag:yaml.org,2002:float",
                                       re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                       list("-+0123456789."))


def parse_command_line_config(entries):
    """`--config KEY=VALUE ...` (the strings as typed) as a config mapping, each VALUE read as YAML.

    Snakemake reads a top-level number itself but leaves `true`, and everything inside a
    list or mapping (`seeds=[1,2]`, `train={epochs: 2}`), as text, which the schema then
    refuses; read as YAML they are the numbers, booleans and lists a config file would give.
    """
    out = {}
    for entry in entries or []:
        key, sep, text = str(entry).partition("=")
        if not sep:
            continue  # Snakemake itself refuses an entry without '='
        try:
            out[key] = None if text == "" else yaml.load(text, Loader=_CommandLineYaml)
        except yaml.YAMLError as e:
            problem = " ".join(str(e).split())
            raise ConfigError(f"--config {key}={text}: the value is not valid YAML ({problem}). Write it as "
                              f"in a config file and quote the whole entry for the shell, e.g. "
                              f"--config 'seeds=[1, 2]' 'train={{epochs: 2, batch_size: 64}}'") from None
    return out


def merge_configs(base, override):
    """override merged into a copy of base, nested mappings key by key (as Snakemake merges --configfile)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    merged = {}
    try:
        for path in argv:
            loaded = load_config_file(path)
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}: the config must be a mapping of keys to values, "
                                  f"not {type(loaded).__name__}")
            merged = merge_configs(merged, loaded or {})
        validate_config(merged)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    print("config OK:", " + ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
