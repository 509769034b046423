rule infer:
    """Segment the skyrmions of every configured experimental image with the trained model.

    One directory per image (labels TIFF, instances CSV, overlay and psi6 PNGs, lattice JSON)
    and summary.json. An image that cannot be processed (unreadable, no pixel size and no
    lattice ring, ...) is listed with its error in summary.json and the report; the rule still
    succeeds (--allow-failed) so that the other images and the report are kept.
    """
    input:
        model="results/model",
        images=get_infer_inputs(),
    output:
        directory("results/inference"),
    log:
        "results/logs/infer/infer.log",
    benchmark:
        "results/benchmarks/infer.tsv"
    conda:
        "../../envs/ltemfactory.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        options=get_infer_options(),
    shell:
        "ltemfactory infer {input.images:q} --model {input.model} {params.options}"
        " --out {output} --threads {threads} --allow-failed > {log} 2>&1"


rule report:
    """Markdown report (results/report/report.md, figures copied alongside) linking the dataset
    card, the training summary, the test metrics and the inference results."""
    input:
        card="results/dataset_card",
        model="results/model",
        evaluation="results/evaluation",
        inference="results/inference",
    output:
        directory("results/report"),
    log:
        "results/logs/report/report.log",
    conda:
        "../../envs/ltemfactory.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "ltemfactory report --dataset-card {input.card} --model {input.model}"
        " --evaluation {input.evaluation} --inference {input.inference}"
        " --out {output} > {log} 2>&1"
