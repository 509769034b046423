rule sweep:
    """Sample sweep.n_states parameter sets from the config into one table."""
    input:
        config=get_configfile(),
    output:
        "results/sweep.tsv",
    log:
        "results/logs/sweep/sweep.log",
    conda:
        "../../envs/ltemfactory.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "ltemfactory sweep --config {input.config} --out {output} > {log} 2>&1"
