"""Input functions and helpers shared by the rule files (no rules here)."""

import copy
import math
import os

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError

# The conda env (envs/ltemfactory.yaml) pip-installs the project from ${LTEMFACTORY_SRC}.
# Snakemake copies env files into its conda prefix before creating them, so a path relative
# to the env file would point into .snakemake/; point pip at this checkout instead.
os.environ.setdefault("LTEMFACTORY_SRC", workflow.basedir)


def get_configfile():
    """The one config file that every job reads (`ltemfactory <cmd> --config FILE`).

    The last --configfile given on the command line, else configs/config.yaml.
    """
    if workflow.overwrite_configfiles:
        return str(workflow.overwrite_configfiles[-1])
    return "configs/config.yaml"


def use_command_line_config_only():
    """Drop configs/config.yaml from the config when --configfile files were given.

    Snakemake merges the workflow's configfile with the command-line ones key by key, which
    would e.g. add the demo's explicit parameters to a config that uses sweep.preset.
    """
    if workflow.overwrite_configfiles:
        config.clear()
        config.update(copy.deepcopy(workflow.config_settings.overwrite_config))


def _differing_keys(a, b, prefix=""):
    """Dotted key paths whose values differ between two nested mappings."""
    paths = []
    for key in sorted(set(a) | set(b), key=str):
        path = f"{prefix}{key}"
        if key not in a or key not in b:
            paths.append(path)
        elif isinstance(a[key], dict) and isinstance(b[key], dict):
            paths.extend(_differing_keys(a[key], b[key], prefix=f"{path}."))
        elif a[key] != b[key]:
            paths.append(path)
    return paths


def check_config_source(raw_config):
    """Stop unless the jobs' config file holds exactly the config Snakemake validated.

    Snakemake merges every --configfile and --config KEY=VALUE into one config; the jobs only
    read get_configfile(). Any difference would run jobs on values nobody validated.
    """
    path = get_configfile()
    differing = _differing_keys(raw_config, load_configfile(path))
    if differing:
        raise WorkflowError(
            f"The jobs read the config file {path}, but the workflow config differs from it "
            f"at: {', '.join(differing)}. Put every setting in one config file and pass it "
            "with --configfile FILE, without --config KEY=VALUE overrides or further "
            "--configfile files."
        )


def get_batches():
    """Batch indices 0..B-1, B = ceil(sweep.n_states / sweep.batch_size)."""
    sweep = config["sweep"]
    return range(math.ceil(sweep["n_states"] / sweep["batch_size"]))


def get_relax_stores():
    """One relaxed-state Zarr store per batch."""
    return expand("results/relax/batch_{batch}.zarr", batch=get_batches())


def get_montages():
    """One m_z montage PNG per batch."""
    return expand("results/relax/batch_{batch}_mz.png", batch=get_batches())


def get_render_stores():
    """One rendered-image Zarr store per batch."""
    return expand("results/render/batch_{batch}.zarr", batch=get_batches())


# Image suffixes that `ltemfactory infer` reads (ltemfactory.inference.readers.SUFFIXES).
INFER_SUFFIXES = (
    ".tif",
    ".tiff",
    ".dm3",
    ".dm4",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".bmp",
    ".npy",
)


def get_infer_inputs():
    """The images of infer.inputs: files as given, globs and folders expanded (sorted).

    A glob or folder that matches no image stops the workflow with the entry named.
    """
    import glob

    images = []
    for entry in config["infer"]["inputs"]:
        if os.path.isdir(entry):
            found = sorted(
                os.path.join(entry, name)
                for name in os.listdir(entry)
                if name.lower().endswith(INFER_SUFFIXES)
            )
        elif glob.has_magic(entry):
            found = sorted(glob.glob(entry))
        else:
            found = [entry]
        if not found:
            raise WorkflowError(f"infer.inputs: {entry!r} matches no image file")
        images.extend(p for p in found if p not in images)
    return images


def get_infer_options():
    """Command-line options of `ltemfactory infer` from the infer config section."""
    infer = config["infer"]
    options = [
        f"--tile-px {infer['tile_px']}",
        f"--overlap-px {infer['overlap_px']}",
        f"--lowpass-sigma-a {infer['lowpass_sigma_a']!r}",
        f"--min-diameter-fraction {infer['min_diameter_fraction']!r}",
    ]
    if infer.get("pixel_size_nm") is not None:
        options.append(f"--pixel-size-nm {infer['pixel_size_nm']!r}")
    if infer.get("tilt_axis_deg") is not None:
        options.append(f"--tilt-axis-deg {infer['tilt_axis_deg']!r}")
    return " ".join(options)
