rule render:
    """Simulate render.variants_per_state LTEM images of every state in one relaxed batch."""
    input:
        relax="results/relax/batch_{batch}.zarr",
        config=get_configfile(),
    output:
        directory("results/render/batch_{batch}.zarr"),
    log:
        "results/logs/render/batch_{batch}.log",
    benchmark:
        "results/benchmarks/render/batch_{batch}.tsv"
    wildcard_constraints:
        batch=r"\d+",
    conda:
        "../../envs/ltemfactory.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "ltemfactory render --config {input.config} --relax {input.relax}"
        " --out {output} --threads {threads} > {log} 2>&1"
