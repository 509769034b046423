rule relax:
    """Relax one batch of sweep states into a Zarr store (array m: state, component, z, y, x)."""
    input:
        sweep="results/sweep.tsv",
        config=get_configfile(),
    output:
        directory("results/relax/batch_{batch}.zarr"),
    log:
        "results/logs/relax/batch_{batch}.log",
    benchmark:
        "results/benchmarks/relax/batch_{batch}.tsv"
    wildcard_constraints:
        batch=r"\d+",
    conda:
        "../../envs/ltemfactory.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        # GPUs per job (SLURM plugin: --gpus); 0 runs on CPU. Raise it in a profile with
        # set-resources, together with relax.device: cuda (or auto) in the config.
        gpu=0,
    shell:
        "ltemfactory relax --config {input.config} --sweep {input.sweep}"
        " --batch {wildcards.batch} --out {output} --threads {threads} > {log} 2>&1"


rule montage:
    """Plot the m_z component of every state in one relaxed batch as a PNG grid."""
    input:
        "results/relax/batch_{batch}.zarr",
    output:
        "results/relax/batch_{batch}_mz.png",
    log:
        "results/logs/montage/batch_{batch}.log",
    wildcard_constraints:
        batch=r"\d+",
    conda:
        "../../envs/ltemfactory.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "ltemfactory montage {input} --out {output} > {log} 2>&1"
