"""`seqrec` command line: wires the stages together; every stage also works as a library.

Bad input (a recipe, a raw file, a flag's value) raises a SeqrecError naming the problem; main()
is the one place that turns it into a message on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from .errors import SeqrecError

DEFAULT_CONFIG = "configs/ml-100k.yaml"
USER_ERROR = 2  # exit status for a SeqrecError (argparse uses 2 for bad flags too)


def _config(args, name: str, **overrides):
    """Section `name` of the recipe given by --config, with the command's flags applied."""
    from .config import load_recipe, section

    return section(load_recipe(args.config), name, **overrides)


def cmd_preprocess(args) -> None:
    from seqrec.preprocessing.pipeline import run_etl

    cfg = _config(args, "etl", output_dir=args.output_dir, max_len=args.max_len)
    result = run_etl(cfg)  # bad raw input: an InteractionError naming file, column and row
    print(f"rows in        {result.rows_in:,} ({result.rows_per_second:,.0f} rows/s, {result.seconds:.1f} s)")
    print(f"sequences in   {result.sequences_in:,} distinct {cfg.key}")
    for reason, count in result.dropped_reasons.items():  # every filter, even at 0
        print(f"dropped        {count:,} sequences: {reason}")
    for reason, count in result.dropped_interactions.items():
        print(f"cut            {count:,} interactions: {reason}")
    print("sequences out  " + ", ".join(f"{k} {v:,}" for k, v in result.sequences.items())
          + (f" over {len(result.windows)} windows" if result.windows else ""))
    print(f"items          {result.num_items:,}")
    print(f"output         {result.output_dir}")


def cmd_train(args) -> None:
    from .config import load_recipe

    if load_recipe(args.config).get("recformer"):
        return cmd_train_recformer(args)
    from seqrec.training.trainer import train

    from .report import metrics_table

    cfg = _config(args, "train", data_dir=args.data_dir, output_dir=args.output_dir, epochs=args.epochs)
    result = train(cfg)  # under torchrun: one rank of a distributed run
    if int(os.environ.get("RANK", "0")):
        return  # rank 0 reports
    print(metrics_table(result))
    print(f"trained on     {result.train_targets:,} targets per epoch of {result.train_interactions:,} "
          f"training interactions (windows of max_len={result.max_len})")
    print(f"checkpoint: {result.output_dir} (best epoch {result.best_epoch} of {result.epochs_run})")


def cmd_train_recformer(args) -> None:
    """A recipe with a `recformer` section trains the text model (see docs/recformer.md)."""
    from seqrec.training.recformer.train import train_recformer

    cfg = _config(args, "recformer", data_dir=args.data_dir, output_dir=args.output_dir)
    result = train_recformer(cfg)
    print(f"{'test':8s}{'rows':>7s}{'ndcg@10':>9s}{'recall@10':>10s}{'mrr':>8s}   (zero-shot ndcg@10)")
    for part in ("all", "warm", "cold"):
        m, z = result["test"][part], result["zero_shot"][part]
        print(f"{part:8s}{m['rows']:7d}{m['ndcg@10']:9.4f}{m['recall@10']:10.4f}{m['mrr']:8.4f}   ({z['ndcg@10']:.4f})")
    print(f"model: {cfg.output_dir} (valid ndcg@10 {result['valid_ndcg@10']:.4f}, {result['seconds']:.0f} s)")


def cmd_incremental(args) -> None:
    from seqrec.training.incremental import SHORT

    cfg = _config(args, "incremental", data_dir=args.data_dir, output_dir=args.output_dir)
    if args.serve:
        from seqrec.model_repository.continuous import REPORT_CSV, serve_incremental

        def reloaded(event: dict) -> None:
            print(f"window {event['window']}: version {event['version']} serving at {event['url']} "
                  f"(reload {event['reload_seconds']:.1f} s)", flush=True)

        report = serve_incremental(cfg, on_reload=reloaded)  # a failed reload: ReloadError
    else:
        from seqrec.training.incremental import train_incremental

        report = train_incremental(cfg)
    served = "served" in (report["windows"] or [{}])[0]
    print(f"{'trained on':14s}{'evaluated on':14s}{'sessions':>9s}{'ndcg@10':>9s}{'recall@10':>10s}"
          f"{'pop ndcg@10':>12s}" + (f"{'served ndcg@10':>15s}" if served else ""))
    for w in report["windows"]:
        print(f"{w['trained_on']:14s}{w['evaluated_on']:14s}{w['sessions']:9d}"
              f"{w['model']['ndcg@10']:9.4f}{w['model']['recall@10']:10.4f}{w['popularity']['ndcg@10']:12.4f}"
              + (f"{w['served']['ndcg@10']:15.4f}" if served else ""))
    avg = report["average"]
    print(f"{'average':37s}{avg['model']['ndcg@10']:9.4f}{avg['model']['recall@10']:10.4f}"
          f"{avg['popularity']['ndcg@10']:12.4f}"
          + (f"{report['served_average']['ndcg@10']:15.4f}" if served else ""))
    for window, counts in report["dropped"].items():
        for reason, count in counts.items():
            if count:
                print(f"dropped        {count:,} sequences of window {window}: {reason}")
    if not any(sum(c.values()) for c in report["dropped"].values()):
        print(f"dropped        0 sequences: {SHORT} (every window)")
    print(f"report: {cfg.output_dir}/incremental.json, plot: {cfg.output_dir}/incremental.png")
    if served:
        differ = [w["evaluated_on"] for w in report["windows"] if not w["serving"]["matches_offline"]]
        print(f"served vs offline: {cfg.output_dir}/{REPORT_CSV}; "
              + (f"DIFFERENT on {', '.join(differ)}" if differ else "equal on every window")
              + f"; repository {report['serving']['repository']} (version {report['serving']['version']})")


def cmd_rank(args) -> None:
    from seqrec.training.ranker.trainer import rank

    cfg = _config(args, "rank", data_dir=args.data_dir, output_dir=args.output_dir, epochs=args.epochs)
    try:
        result = rank(cfg)
    except (FileNotFoundError, ValueError) as err:  # missing ETL output, a mismatched checkpoint
        raise SeqrecError(str(err)) from None
    print(f"{'split':8s}{'auc':>8s}{'gauc':>8s}{'logloss':>9s}{'examples':>10s}")
    for split in ("train", "test"):
        m = getattr(result, split)
        print(f"{split:8s}{m['auc']:8.4f}{m['gauc']:8.4f}{m['logloss']:9.4f}{result.examples[split]:10,d}")
    print(f"strategy {result.strategy}: {result.dense_parameters:,} dense parameters, copied "
          f"{len(result.copied)} tensors, froze {len(result.frozen)} ({result.seconds:.1f} s)")
    print(f"output: {result.output_dir}")


def cmd_export(args) -> None:
    from seqrec.model_repository.export import MODEL, export_repository, scorer_fallback, versions

    from .config import load_recipe

    flags = dict(repository=args.repository, top_k=args.top_k, gpu=args.gpu or None,
                 instances=args.instances)
    if load_recipe(args.config).get("recformer"):  # the text model (see docs/recformer.md)
        from seqrec.model_repository.text_export import export_text_repository

        rcfg = _config(args, "recformer")
        cfg = _config(args, "export", data_dir=rcfg.data_dir, model_dir=rcfg.output_dir, **flags)
        try:
            repo = export_text_repository(cfg, rcfg)
        except (FileNotFoundError, ValueError) as err:  # no trained run, a mismatched one
            raise SeqrecError(str(err)) from None
        print(f"model repository: {repo} (version {versions(repo / MODEL)[-1]}, text model)")
        return
    cfg = _config(args, "export", **flags)

    try:
        repo = export_repository(cfg)
    except (FileNotFoundError, ValueError) as err:  # a missing input, a model and ranker that disagree
        raise SeqrecError(str(err)) from None
    print(f"model repository: {repo} (version {versions(repo / MODEL)[-1]})")
    if cfg.ranker:
        print(f"two-stage: the top {cfg.candidates} retrieved items re-ranked by the ranker in {cfg.ranker}")
    why = scorer_fallback(repo)
    if why:
        print(f"fallback: {MODEL} runs the eager scorer from the installed seqrec.training "
              f"(export.allow_fallback): {why}", file=sys.stderr)


def cmd_serve(args) -> None:
    from seqrec.model_repository.supervisor import serve_forever

    cfg = _config(args, "export", repository=args.repository)
    explicit = args.model_control == "explicit"
    serve_forever(cfg.repository, model_control=args.model_control,
                  load_models=["seqrec"] if explicit else None, key_file=args.key_file)


def cmd_items(args) -> None:
    """`items add`: new items' text into the served text model, as a new model version."""
    from seqrec.model_repository.text_export import add_items

    cfg = _config(args, "export", repository=args.repository)
    version, ids = add_items(cfg.repository, args.file)
    print(f"added {len(ids)} item(s) to {cfg.repository} as version {version}")
    if args.url:
        from seqrec.client.control import ModelControl, ModelControlError, read_key

        try:
            with ModelControl(args.url, key=read_key(args.key_file), timeout_s=args.timeout) as ctl:
                ctl.load("seqrec")
        except ModelControlError as err:
            raise SeqrecError(f"version {version} is published but not loaded: {err}") from None
        print(f"loaded version {version} at {args.url}")
    else:
        print("a server under explicit model control serves it after `seqrec model load`")


def cmd_model(args) -> None:
    from seqrec.client.control import ModelControl, ModelControlError, read_key

    try:
        with ModelControl(args.url, key=read_key(args.key_file), timeout_s=args.timeout) as ctl:
            getattr(ctl, args.action)(args.name)
    except ModelControlError as err:  # the client stands alone: its errors are its own
        raise SeqrecError(str(err)) from None
    print(f"{args.action}ed {args.name!r} at {args.url}")


def parse_items(text: str) -> list[int]:
    items = []
    for part in text.split(","):
        part = part.strip()
        try:
            items.append(int(part))
        except ValueError:
            raise SeqrecError(f"--items: {part!r} is not an integer item id") from None
    return items


def parse_features(specs: list[str] | None) -> dict[str, list[float]] | None:
    """--feature rating=4,5,3 (repeatable) -> {"rating": [4.0, 5.0, 3.0]}; the client casts each
    to the type the served model declares (INT64 or FP32)."""
    if not specs:
        return None
    out = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name:
            raise SeqrecError(f"--feature {spec!r}: expected NAME=v1,v2,... (one value per item)")
        try:
            out[name] = [float(v) for v in values.split(",")]
        except ValueError:
            raise SeqrecError(f"--feature {name}: {values!r} is not a list of numbers") from None
    return out


def cmd_query(args) -> None:
    from seqrec.client import RecommenderClient, RecommendationError, format_table

    titles = None
    if not args.no_titles:
        from seqrec.preprocessing.datasets import read_movielens_100k_titles

        titles = read_movielens_100k_titles()
    with RecommenderClient(args.url, model_name=args.model, timeout_s=args.timeout) as client:
        try:
            rec = client.recommend(parse_items(args.items), features=parse_features(args.feature))
        except (RecommendationError, ValueError) as err:  # the server's or the client's checks
            raise SeqrecError(str(err)) from None
    print(format_table(rec, titles))
    print(f"latency: {rec.latency_ms:.1f} ms")


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(args.config, epochs=args.epochs, items=parse_items(args.items))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, fn, help_text, config=True):
        p = sub.add_parser(name, help=help_text)
        if config:
            p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML recipe (default: %(default)s)")
        p.set_defaults(fn=fn)
        return p

    p = add("preprocess", cmd_preprocess, "raw interactions -> fitted workflow + split parquet")
    p.add_argument("--output-dir")
    p.add_argument("--max-len", type=int)
    p = add("train", cmd_train, "train the transformer, evaluate against popularity")
    p.add_argument("--data-dir")
    p.add_argument("--output-dir")
    p.add_argument("--epochs", type=int)
    p = add("incremental", cmd_incremental, "train on time window t, evaluate on t+1, continue")
    p.add_argument("--data-dir")
    p.add_argument("--output-dir")
    p.add_argument("--serve", action="store_true",
                   help="publish every window's model to a server (explicit model control) and "
                        "evaluate the next window through it (incremental.serve)")
    p = add("rank", cmd_rank, "train the discriminative ranker (AUC / GAUC on held-out users)")
    p.add_argument("--data-dir")
    p.add_argument("--output-dir")
    p.add_argument("--epochs", type=int)
    p = add("export", cmd_export, "write the Triton model repository")
    p.add_argument("--repository")
    p.add_argument("--top-k", type=int)
    p.add_argument("--gpu", action="store_true", help="KIND_GPU instances (NVIDIA containers)")
    p.add_argument("--instances", type=int, help="model instances per server (default 1)")
    p = add("serve", cmd_serve, "run tritonserver on 127.0.0.1 until Ctrl-C")
    p.add_argument("--repository")
    p.add_argument("--model-control", choices=["none", "explicit"], default="none",
                   help="explicit: load/unload/reload with `seqrec model` while serving")
    p.add_argument("--key-file", help="where to write the model-control key (explicit mode)")
    p = add("model", cmd_model, "load (reload: the newest version) or unload a served model",
            config=False)
    p.add_argument("action", choices=["load", "unload"])
    p.add_argument("name", nargs="?", default="seqrec")
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC address (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--key-file", help="model-control key written by `seqrec serve` "
                   "(default: $SEQREC_REPOSITORY_KEY, else the file serve wrote)")
    p = add("items", cmd_items, "add items (their attributes) to an exported text model")
    p.add_argument("action", choices=["add"])
    p.add_argument("--file", required=True, help="CSV: item_id and the item table's attribute columns")
    p.add_argument("--repository")
    p.add_argument("--url", help="also load the new version into the server at this gRPC address")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--key-file", help="model-control key written by `seqrec serve`")
    p = add("query", cmd_query, "ask a running server for the top-k", config=False)
    p.add_argument("--items", required=True, help="original item ids, oldest first: 50,172,133")
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC address (default: %(default)s)")
    p.add_argument("--model", default="seqrec")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-titles", action="store_true", help="do not look up MovieLens titles")
    p.add_argument("--feature", action="append", metavar="NAME=V1,V2,...",
                   help="a side feature of a model trained with them, one value per item (repeatable)")
    p = add("demo", cmd_demo, "ETL -> train -> export -> serve -> query on MovieLens-100k")
    p.add_argument("--epochs", type=int)
    p.add_argument("--items", default="50,172,133")

    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except SeqrecError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
