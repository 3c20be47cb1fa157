"""Checkpoints trained elsewhere (config `external_models`), made into the study's model files.

    from lib.train.external import check_external_models, external_file, import_job
    check_external_models(cfg)          # before any job: every file there, right sha256, loads strictly
    path = external_file("oe_paper_baseline", cfg["external_models"]["oe_paper_baseline"], "data")
    import_job("oe_paper_baseline", entry, "data", False, "results/models/external/oe_paper_baseline/seed0/model.pt",
               "import.log")         # the model.pt every later rule reads, as for a trained model

A `url` entry is downloaded once, with the project's checked download code, to
<data_dir>/external_models/<name>/<file name>; a `path` entry is read where it is. The
file must be a plain state dict (loaded with weights_only=True) whose keys and shapes
load with strict=True into the named architecture of lib/train/models.py. Any failure
raises ExternalModelError naming the model, the file and the fix.
"""
import os
import posixpath
import urllib.parse

from lib.common import job_logger
from lib.data.download import DataError, ensure_file, file_digests, stage_hint
from lib.train.models import build_model, load_weights_only, save_torch_atomic



class ExternalModelError(ValueError):
    pass


def external_file(name, entry, data_dir, offline=False):
    """The checkpoint's local path: entry['path'], or the url's download under data_dir (fetched if missing)."""
    if entry.get("path"):
        path = os.path.expanduser(entry["path"])
        if not os.path.exists(path):
            raise ExternalModelError(
                f"external model {name!r}: {path} does not exist. Fix external_models.{name}.path, "
                f"or give its url instead to download it.")
        return path
    file_name = posixpath.basename(urllib.parse.urlparse(entry["url"]).path)
    relpath = f"external_models/{name}/{file_name}"
    try:
        return str(ensure_file(data_dir, relpath, [entry["url"]], sha256=entry["sha256"], offline=offline))
    except DataError as e:
        raise ExternalModelError(f"external model {name!r}: {e}") from None


def load_external_state(name, entry, path):
    """The checked state dict of one entry: sha256 as pinned, loads strictly into its architecture."""
    digest = file_digests(path)["sha256"]
    if digest != entry["sha256"].lower():
        raise ExternalModelError(
            f"external model {name!r}: {path} has sha256 {digest}, but external_models.{name}.sha256 "
            f"pins {entry['sha256'].lower()}. The file is another version or damaged: replace it with the "
            f"intended file, or, if this file is the one you mean, set the sha256 to {digest}. "
            + stage_hint(path, [entry["url"]] if entry.get("url") else [], sha256=entry["sha256"]))
    try:
        state = load_weights_only(path, "cpu")
    except Exception as e:
        raise ExternalModelError(f"external model {name!r}: {path} does not load as a state dict ({e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a model.pt of this project
    model = build_model(entry["architecture"], entry.get("num_classes", 10))
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        raise ExternalModelError(
            f"external model {name!r}: {path} does not load strictly into architecture "
            f"{entry['architecture']!r} ({' '.join(line.strip() for line in first[:3])}). Set "
            f"external_models.{name}.architecture to the network it was trained as (one of the models "
            f"in lib/train/models.py), or check num_classes.") from None
    return model.state_dict()


def check_external_models(cfg):
    """Fetch (unless offline) and check every external model; raise ExternalModelError listing every failure."""
    problems = []
    for name, entry in cfg.get("external_models", {}).items():
        try:
            load_external_state(name, entry, external_file(name, entry, cfg["data_dir"], cfg.get("offline", False)))
        except ExternalModelError as e:
            problems.append(str(e))
    if problems:
        raise ExternalModelError("\n".join(problems))


def import_job(name, entry, data_dir, offline, out_model, log_path):
    """Write the external checkpoint as this project's model.pt (lib.train.models.load_model_file reads it)."""
    log = job_logger(log_path)
    path = external_file(name, entry, data_dir, offline)
    state = load_external_state(name, entry, path)
    save_torch_atomic(out_model, {
        "model_name": entry["architecture"], "num_classes": int(entry.get("num_classes", 10)),
        "state_dict": state, "input_convention": entry.get("input", "unit"),
        "external": {"name": name, "source": entry.get("path") or entry["url"], "sha256": entry["sha256"].lower()}})
    log.info("external model %s: %s (sha256 %s) -> %s", name, path, entry["sha256"], out_model)

