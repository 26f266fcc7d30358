"""`seqrec demo`: the whole loop on MovieLens-100k, ETL -> train -> export -> real Triton -> query."""
from __future__ import annotations

import time

from tqdm.auto import tqdm

from .config import load_recipe, section
from .report import metrics_table


def run_demo(config: str, epochs: int | None = None, items: list[int] | None = None) -> dict:
    from seqrec.client import RecommenderClient, format_table
    from seqrec.model_repository.export import export_repository
    from seqrec.model_repository.server import TritonServer
    from seqrec.preprocessing.datasets import read_movielens_100k_titles
    from seqrec.preprocessing.pipeline import run_etl
    from seqrec.training.trainer import train

    recipe = load_recipe(config)
    items = items or [50, 172, 133]
    started = time.perf_counter()
    stages = tqdm(total=5, desc="demo", unit="stage", position=0)

    stages.set_postfix_str("preprocess")
    etl = run_etl(section(recipe, "etl"))
    stages.update()

    stages.set_postfix_str("train")
    trained = train(section(recipe, "train", epochs=epochs))
    stages.update()

    stages.set_postfix_str("export")
    repo = export_repository(section(recipe, "export"))
    stages.update()

    stages.set_postfix_str("serve")
    server = TritonServer(repo).start()
    stages.update()
    try:
        stages.set_postfix_str("query")
        with RecommenderClient(server.grpc_url) as client:
            client.recommend(items)  # first call warms the python stubs
            answer = client.recommend(items)
        stages.update()
    finally:
        server.stop()
    stages.close()

    titles = read_movielens_100k_titles()
    print("\n== seqrec demo: MovieLens-100k ==")
    print(f"ETL        {etl.rows_in:,} rows in {etl.seconds:.2f} s ({etl.rows_per_second:,.0f} rows/s); "
          f"{etl.sequences['test']:,} user sequences, {etl.num_items:,} items -> {etl.output_dir}")
    print(f"training   {trained.epochs_run} epochs (best {trained.best_epoch}) in {trained.seconds:.0f} s")
    print(metrics_table(trained))
    print(f"export     {repo}")
    print(f"server     tritonserver ready in {server.startup_seconds:.1f} s (stopped again)")
    print(f"query      items {items}: "
          + ", ".join(titles.get(i, str(i)) for i in items))
    print(format_table(answer, titles))
    print(f"latency    {answer.latency_ms:.1f} ms (gRPC round trip, warm)")
    print(f"total      {time.perf_counter() - started:.0f} s")
    print("serve it:  seqrec serve    then: seqrec query --items 50,172,133")
    return {"etl": etl, "train": trained, "repository": str(repo), "answer": answer}
