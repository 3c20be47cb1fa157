"""Test sets seen in training: the OOD sets that share their source with the Outlier-Exposure
set or a PixMix mixing folder, marked in the report.

    from lib.data.leaks import leaked_sets, write_leaks
    leaked_sets(cfg)   # {"fashion_mnist": "shares its source ..."}: test sets seen in training
    write_leaks(cfg, "results/tables/leaks.json")
"""
from lib.common import write_json_atomic
from lib.data.registry import origin


def leaked_sets(cfg):
    """{test OOD set: why it counts as seen in training} for a validated config.

    A test set is "seen in training" when it shares its origin with the Outlier-Exposure
    auxiliary set (and an OE variant is trained), or with the pictures of a PixMix mixing
    folder (`pixmix.mixing.shares_source_with`, when pixmix is trained on a folder).
    """
    seen = {}
    if any(o in ("oe", "oe_tune") for o in cfg["oe"]):
        aux = cfg["outlier_exposure"]["source"]
        seen[origin(aux)] = f"shares its source ({origin(aux)}) with the Outlier-Exposure set {aux}"
    mixing = cfg.get("pixmix", {}).get("mixing", {})
    if "pixmix" in cfg["augment"] and mixing.get("source") == "folder":
        for name in mixing.get("shares_source_with") or []:
            seen.setdefault(origin(name), f"shares its source ({origin(name)}) with the PixMix mixing folder")
    return {name: seen[origin(name)] for name in cfg["ood_sets"] if origin(name) in seen}


def write_leaks(cfg, path):
    """results/tables/leaks.json: {"seen_in_training": {set: reason}} for the report and readers."""
    write_json_atomic(path, {"seen_in_training": leaked_sets(cfg)})
