rule train:
    """Train the instance-segmentation U-Net on the dataset; the run is tracked in MLflow.

    Checkpoints live in results/checkpoints/train (not an output, so Snakemake keeps them):
    a rerun after a crash resumes from last.ckpt in the same MLflow run.
    """
    input:
        dataset="results/dataset.zarr",
        check="results/dataset_check.txt",
        card="results/dataset_card",
        config=get_configfile(),
    output:
        directory("results/model"),
    log:
        "results/logs/train/train.log",
    benchmark:
        "results/benchmarks/train.tsv"
    conda:
        "../../envs/ltemfactory.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "ltemfactory train --config {input.config} --dataset {input.dataset}"
        " --card {input.card} --checkpoints results/checkpoints/train"
        " --out {output} --threads {threads} > {log} 2>&1"


rule evaluate:
    """Test-split metrics (JSON, logged to the training run) and an image|truth|prediction grid."""
    input:
        model="results/model",
        dataset="results/dataset.zarr",
        config=get_configfile(),
    output:
        directory("results/evaluation"),
    log:
        "results/logs/evaluate/evaluate.log",
    conda:
        "../../envs/ltemfactory.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "ltemfactory evaluate --model {input.model} --dataset {input.dataset}"
        " --config {input.config} --out {output} --threads {threads} > {log} 2>&1"
