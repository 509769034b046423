rule assemble:
    """Copy every batch (relaxed states, images, labels) into one chunked, sharded dataset."""
    input:
        relax=get_relax_stores(),
        render=get_render_stores(),
        sweep="results/sweep.tsv",
        config=get_configfile(),
    output:
        directory("results/dataset.zarr"),
    log:
        "results/logs/assemble/assemble.log",
    benchmark:
        "results/benchmarks/assemble.tsv"
    conda:
        "../../envs/ltemfactory.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "ltemfactory assemble --config {input.config} --relax {input.relax}"
        " --render {input.render} --sweep {input.sweep} --out {output} > {log} 2>&1"


rule dataset_check:
    """Verify shapes, dtypes, labels, instance table, split and fingerprint of the dataset."""
    input:
        "results/dataset.zarr",
    output:
        "results/dataset_check.txt",
    log:
        "results/logs/dataset_check/dataset_check.log",
    conda:
        "../../envs/ltemfactory.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "ltemfactory dataset check {input} > {output} 2> {log}"


rule dataset_card:
    """Markdown dataset card with counts, parameter histograms and an example montage."""
    input:
        "results/dataset.zarr",
    output:
        directory("results/dataset_card"),
    log:
        "results/logs/dataset_card/dataset_card.log",
    conda:
        "../../envs/ltemfactory.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "ltemfactory dataset card {input} --out {output} > {log} 2>&1"
