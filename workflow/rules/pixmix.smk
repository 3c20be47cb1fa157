# PixMix's mixing set: results/data/mixing.npz (lib.layout.mixing_file; uint8 [M,28,28], lib/data/mixing.py), generated
# IFS fractals or pictures from a staged folder. Planned only when pixmix is in `augment`
# (the train and report rules ask for it then: train.smk, lib/report/inputs.py).

import lib.data.mixing as lib_mixing

MIXING = config["pixmix"]["mixing"]


def mixing_folder():
    return os.path.expanduser(MIXING["folder"]) if MIXING["source"] == "folder" else None


rule mixing_set:
    output:
        npz=layout.mixing_file(),
    params:
        py=PY,
        source=MIXING["source"],
        pictures=MIXING["count"],
        seed=MIXING["seed"],
        folder_arg=lambda wc: f"--folder {shlex.quote(mixing_folder())}" if mixing_folder() else "",
        # A folder's pictures are not inputs (thousands of files); their listing (names,
        # sizes, mtimes) is a param instead, so an added, removed or rewritten picture reruns
        # the job and every PixMix model after it.
        folder_state=lambda wc: lib_mixing.folder_fingerprint(mixing_folder()) if mixing_folder() else "",
    log:
        layout.log_file("data/mixing"),
    benchmark:
        layout.benchmark_file("data/mixing")
    # lib.data.mixing names an empty or unreadable folder and the fix; shown on the terminal.
    shell:
        "{params.py} -m lib.data.mixing --source {params.source} --count {params.pictures} --seed {params.seed} "
        "{params.folder_arg} --out {output.npz:q} > {log:q} 2>&1 || {{ cat {log:q} >&2; exit 1; }}"


# Seconds of numpy for fractals, a minute or so for a folder of thousands of pictures, no
# GPU: cheaper here than a place in the SLURM queue.
localrules:
    mixing_set,
