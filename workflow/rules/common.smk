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
