"""ltemfactory workflow: parameter sweep -> relaxed magnetisation stores (+ montages) ->
rendered LTEM image stores -> one checked dataset store with a card -> a trained segmenter
(MLflow run, registered model) -> its test-split evaluation -> inference on the experimental
images -> a Markdown report (results/report/report.md).

Run with `make demo`, or `snakemake --profile configs/profiles/local` (venv bin on PATH).
Every rule calls one `ltemfactory` CLI command; the Python code lives in src/ltemfactory.
"""

import copy

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "configs/config.yaml"


include: "workflow/rules/common.smk"


# A --configfile given on the command line replaces configs/config.yaml instead of being
# merged into it key by key, so that the config equals the file the jobs read.
use_command_line_config_only()
# What the user asked for, before the schema fills in defaults (see check_config_source).
raw_config = copy.deepcopy(config)

# 1. Structure, types and ranges: the error names the offending key path.
validate(config, "workflow/schemas/config.schema.yaml")

# 2. Cross-field consistency (e.g. low > high), when the package is importable here.
try:
    from ltemfactory.config import validate_config
except ImportError:
    validate_config = None
if validate_config is not None:
    validate_config(config, source="config")

# 3. The jobs read the config file itself: refuse --config overrides and merged files.
check_config_source(raw_config)


include: "workflow/rules/sweep.smk"
include: "workflow/rules/relax.smk"
include: "workflow/rules/render.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"


rule all:
    default_target: True
    input:
        "results/sweep.tsv",
        get_relax_stores(),
        get_montages(),
        get_render_stores(),
        "results/dataset_check.txt",
        "results/dataset_card",
        "results/evaluation",
        "results/report",
