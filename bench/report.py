"""Render the benchmark tables of docs/benchmarks.md from bench/results/*.json.

    python bench/report.py            # rewrite the generated tables in docs/benchmarks.md
    python bench/report.py --check    # exit 1 (with a diff) when the file is not what the JSON gives

docs/benchmarks.md holds hand-written text around marker pairs

    <!-- generated from bench/results/<name>.json -->
    ...
    <!-- end generated -->

and everything between a pair is replaced by the table of that JSON file. Every JSON file in
bench/results must have its pair (and every pair its file), so a new result cannot be left out of
the docs. Files without a layout below get a generic table of their `results` (or `cases`) rows.
Only the standard library is used.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- generated from bench/results/(?P<name>[\w.-]+)\.json -->\n)(.*?)(<!-- end generated -->)",
                   re.S)


def threads(n: int) -> str:
    return f"{n} torch thread{'' if n == 1 else 's'}"


def _int(v) -> str:
    return f"{int(round(v)):,}"


def _f(digits: int):
    return lambda v: f"{v:,.{digits}f}"


def _mb(v) -> str:
    return f"{int(round(v)):,} MB"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _columns(rows: list[dict], spec: list[tuple[str, str, object]]) -> str:
    """spec: (header, key, formatter); a row without the key shows '-'."""
    return _table([h for h, _, _ in spec],
                  [[fmt(r[k]) if r.get(k) is not None else "-" for _, k, fmt in spec] for r in rows])


def etl(d: dict) -> str:
    return _columns(d["cases"], [("workflow", "workflow", str), ("rows", "rows", _int),
                                 ("seconds", "seconds", _f(2)), ("rows/s", "rows_per_s", _int),
                                 ("sequences", "sessions", _int), ("peak RSS", "peak_rss_mb", _mb)]) + (
        f"\nOutputs identical to the stock workflow's on the rows both ran: "
        f"{'yes' if d.get('outputs_identical') else 'no'}{_ties(d)}; speed-up on the same rows: "
        f"{d['speedup_same_rows']:.1f}x.\n") + _versus_polars(d.get("versus_polars"))


def _ties(d: dict) -> str:
    if "stock_tied_rows" not in d:
        return ""
    return (f" (the order among its {d['stock_tied_rows']:,} rows with a tied (session, time) aside: "
            "the stock sort leaves it arbitrary)")


def _versus_polars(v) -> str:
    if not isinstance(v, dict):
        return f"Polars reference: {v or 'not run'}.\n"
    return (f"Against Polars {v['polars']} on the same rows: {v['speed_ratio']:.2f}x its speed "
            f"(above 1: seqrec faster), peak RSS {v['rss_ratio']:.2f}x Polars'; outputs identical: "
            f"{'yes' if v['outputs_identical'] else 'no'}.\n")


def readers(d: dict) -> str:
    return _columns(d["results"], [("layout", "layout", str), ("rows", "rows", _int),
                                   ("MB", "mb", _f(1)), ("seconds", "seconds", _f(3)),
                                   ("rows/s", "rows_per_s", _int)])


def train(d: dict) -> str:
    rows = d["results"]
    first = rows[0]
    return _columns(rows, [("case", "name", str), ("ms/step (median)", "ms_per_step", _f(1)),
                           ("ms/step (min)", "ms_per_step_min", _f(1)),
                           ("ms/step (mean)", "ms_per_step_mean", _f(1)),
                           ("sequences/s", "sequences_per_s", _int), ("peak RSS", "peak_rss_mb", _mb)]) + (
        f"\n{first['steps']} steps per case, {first['threads']} torch threads, batch {first['batch']}, "
        f"sequence length {first['seq_len']}, {first['items']:,} items, d_model {first['d_model']}, "
        f"{first['layers']} layers, {first['heads']} heads; 1-minute load average "
        f"{d['machine']['load_average_1min']} on {d['machine']['cpu_threads']} CPU threads.\n")


def train_data(d: dict) -> str:
    load, ev = d["data-loading"], d["evaluation"]
    rows = [["read the list column (values + offsets)", _f(2)(load["read_values_offsets_s"]), "-"],
            ["pad the training matrix", _f(2)(load["pad_matrix_s"]), "-"],
            [f"gather every batch of one epoch ({load['batches']:,})", _f(2)(load["gather_all_batches_s"]),
             _mb(load["peak_rss_mb"])],
            *([["popularity baseline, strict ranks, seen items kept and excluded (streamed)",
                _f(2)(ev["popularity_both_policies_s"]), "-"]] if "popularity_both_policies_s" in ev else
              [["popularity baseline", _f(2)(ev["popularity_s"]), "-"],
               ["popularity baseline, seen items excluded (streamed)", _f(2)(ev["popularity_exclude_seen_s"]), "-"]]),
            [f"model evaluation, seen items excluded ({ev['model_sessions']:,} sessions)",
             _f(2)(ev["model_exclude_seen_s"]), _mb(ev["peak_rss_mb"])]]
    return _table(["step", "seconds", "peak RSS of the case"], rows) + (
        f"\n{load['sessions']:,} synthetic sessions ({load['values']:,} interactions), {load['items']:,} items, "
        f"batch {load['batch']}, sequence length {load['seq_len']}, {ev['threads']} torch threads; data for one "
        f"epoch: {load['epoch_data_s']:.1f} s (reading the same column as one pandas object per row: "
        f"{load['reference_pandas_rows_read_s']:.1f} s). Evaluation peak RSS {_mb(ev['peak_rss_mb'])} "
        f"(limit {_mb(d['rss_limit_mb'])}); a dense [sessions, items] seen matrix would be "
        f"{ev['dense_seen_matrix_gb']:.0f} GB. 1-minute load average {d['machine']['load_average_1min']} "
        f"on {d['machine']['cpu_threads']} CPU threads.\n")


def side_features(d: dict) -> str:
    return _table(["variant", "valid NDCG@10", "valid Recall@10", "test NDCG@10", "test Recall@10",
                   "best epoch", "seconds"],
                  [[r["variant"], f"{r['valid']['ndcg@10']:.4f}", f"{r['valid']['recall@10']:.4f}",
                    f"{r['test']['ndcg@10']:.4f}", f"{r['test']['recall@10']:.4f}",
                    f"{r['best_epoch']} of {r['epochs_run']}", f"{r['seconds']:.0f}"]
                   for r in d["results"]])


def ddp(d: dict) -> str:
    m = d["recipe"]["model"]
    runs = [dict(r, run=f"{r['processes']} process{'es' if r['processes'] > 1 else ''} x "
                        f"{r['threads_per_process']} thread{'s' if r['threads_per_process'] > 1 else ''}")
            for r in d["runs"]]
    return _columns(runs, [("run", "run", str), ("wall s", "wall_s", _f(1)), ("train s", "train_s", _f(1)),
                           ("epochs", "epochs", str), ("final loss", "final_loss", _f(6)),
                           ("valid NDCG@10", "valid_ndcg@10", _f(4)), ("test NDCG@10", "test_ndcg@10", _f(4))]) + (
        f"\n{m['backbone']} {m['task']}, d_model {m['d_model']}, {m['n_layers']} layers, dropout "
        f"{m['dropout']}, {d['recipe']['epochs']} epochs; load average before the run "
        f"{d['machine']['load_average_before']:.1f} on {d['machine']['cpus']} cores. Largest weight "
        f"difference, 2 processes vs 1: {d['max_weight_difference']:.1e}; 1 process with 1 vs 2 "
        f"threads: {d['max_weight_difference_1_process_other_threads']:.1e}.\n")


_SERVING = [("model", "model", str), ("concurrency", "concurrency", str), ("requests", "requests", _int), ("bad", "bad", _int),
            ("requests/s", "requests_per_s", _int), ("p50 ms", "p50_ms", _f(2)),
            ("p90 ms", "p90_ms", _f(2)), ("p99 ms", "p99_ms", _f(2)),
            ("good requests failed", "failed_good", str), ("answers changed", "mismatched", str),
            ("tie swaps", "tie_swaps", str)]


def serving(d: dict) -> str:
    t = d["targets"]
    ratios = ", ".join(f"{c}: p50 {r['p50']:.2f}x, requests/s {r['requests_per_s']:.2f}x"
                       for c, r in d["seqrec_vs_floor"].items())
    return _columns(d["results"], _SERVING) + (
        (f"\nEach figure is the median of {d['rounds']} rounds in which the floor and seqrec were "
         f"measured in turn; seqrec against the floor, per round then the median ({ratios})."
         if d.get("rounds") else f"\nseqrec against the floor in the same run ({ratios}).") +
        f" Load average at the end of the "
        f"run {d['machine']['load_average'][0]:.1f} on {d['machine']['cpus']} cores. Server start "
        f"to ready: {d['server_start_s']} s. Targets: p50 at concurrency 1 {t['p50_c1_vs_floor']} the "
        f"floor's, >= {t['requests_per_s_c16']} requests/s at 16 with p99 <= {t['p99_ms_c16']} ms, "
        f"{t['failed_or_changed_good']} good requests failed or changed.\n" + _cpu(d) + _two_stage(d))


def _cpu(d: dict) -> str:
    """The CPU split per process at concurrency 16, when the run measured it."""
    split = d.get("cpu_us_per_request", {})
    parts = [f"{model}: " + ", ".join(f"{k} {v:,}" for k, v in split[f"{model}_c16"].items())
             for model in ("floor", "seqrec", "two_stage") if f"{model}_c16" in split]
    if not parts:
        return ""
    return ("\nCPU microseconds per request at concurrency 16 (user + system, per process, median "
            "of the rounds; `client` is the load generator): " + "; ".join(parts) + ".\n")


def _two_stage(d: dict) -> str:
    """The two-stage rows' sentence, when the run measured them (bench/serving.py --two-stage)."""
    if "two_stage" not in d:
        return ""
    ts = d["two_stage"]

    def ratios(of):
        return ", ".join(f"{c}: p50 {r['p50']:.2f}x, requests/s {r['requests_per_s']:.2f}x"
                         for c, r in ts[of].items())
    return (f"\n`{ts['model']}` is the same model's two-stage export: its top {ts['candidates']} "
            f"re-ranked by the ranker of `{ts['ranker_config']}` in one batched pass, in the same "
            f"server and rounds. Against the floor: {ratios('vs_floor')}; against seqrec "
            f"(retrieval alone): {ratios('vs_seqrec')}.\n")


def serving_row_errors_ab(d: dict) -> str:
    rps = d["requests_per_s"]

    def runs(side, i):
        return " / ".join(_int(run[i]) for run in rps[side])

    rows = [[str(c), runs("base", i), runs("new", i)] for i, c in enumerate(d["concurrency"])]
    p50 = d["p50_ms_concurrency_1"]
    return _table(["concurrency", "requests/s without per-row answers (runs)",
                   "requests/s with per-row answers (runs)"], rows) + (
        f"\np50 at concurrency 1: {' / '.join(f'{v:.2f}' for v in p50['base'])} ms without, "
        f"{' / '.join(f'{v:.2f}' for v in p50['new'])} ms with.\n")


def soak(d: dict) -> str:
    """bench/soak.py: one run under faults, as measure -> value rows."""
    s, rss = d["summary"], d["rss_mb"]
    served = ", ".join(f"{m} v{v}" for m, v in (s["served_after_reload"] or {}).items()) or "-"
    opt = lambda v, unit="": "-" if v is None else f"{v}{unit}"  # noqa: E731
    rows = [
        ["requests (good + bad)", f"{_int(d['requests'])} ({_int(s['good'])} + {_int(s['bad'])}), "
                                  f"concurrency {d['concurrency']}"],
        ["wall time, requests/s", f"{d['seconds']} s, {_int(d['requests_per_s'])}/s"],
        ["good requests lost (inside the recovery window)", f"{s['lost']} ({s['lost_inside_recovery']})"],
        ["wrong answers outside / inside the recovery window",
         f"{s['wrong_outside_recovery']} / {s['wrong_inside_recovery']}"],
        ["bad requests answered as if good", str(s["bad_answered"])],
        ["stub kill: not ready reported after", opt(s["not_ready_reported_after_s"], " s")],
        ["stub kill: answered again after (recovery window)", opt(s["recovery_window_s"], " s")],
        ["server restarts", str(s["server_restarts"])],
        ["reload: export, then `seqrec model load`",
         f"{opt(s['export_s'], ' s')}, {opt(s['reload_s'], ' s')} (exit {opt(s['reload_exit_code'])}; "
         f"then serving {served})"],
        ["latency p50 / p99, all good requests", f"{s['p50_ms_all']} / {s['p99_ms_all']} ms"],
        ["latency p50 / p99, outside the recovery window",
         f"{s['p50_ms_outside_recovery']} / {s['p99_ms_outside_recovery']} ms"],
    ]
    names = list(rss["start"]) + [n for n in rss["end"] if n not in rss["start"]]
    at = lambda when, n: _mb(rss[when][n]) if n in rss[when] else "-"  # noqa: E731
    rows += [[f"RSS {n} start -> end", f"{at('start', n)} -> {at('end', n)}"] for n in names]
    return _table(["measure", "value"], rows) + (
        f"\nScorer {d['scorer']}; client deadline {d['client_deadline_s']:g} s; load average at the "
        f"end {d['machine']['load_average'][0]:.1f} on {d['machine']['cpus']} cores. The server and "
        f"stub processes at the end are those of the restarted server.\n")


def masked(d: dict) -> str:
    """One row per run of bench/masked.py: the best validation NDCG@10, its epoch and its ratio to
    popularity's; test NDCG@10 of that epoch's weights where the run recorded it (never used to
    choose)."""
    rows = []
    for run, r in d.items():
        curve = r["valid_ndcg10"]
        best = max(range(len(curve)), key=curve.__getitem__)
        test = (f"{r['test_ndcg10']:.4f} ({r['test_ndcg10'] / r['popularity_test_ndcg10']:.2f}x)"
                if "test_ndcg10" in r else "-")
        rows.append([run, f"{r['lr']:g}", f"{r['model'].get('dropout', '-')}", str(_masked_batch(r)),
                     str(len(curve)), f"{curve[best]:.4f}", str(best + 1),
                     f"{curve[best] / r['popularity_valid_ndcg10']:.2f}", test])
    return _masked_batches(d) + "\n" + _table(
        ["run (data/combo/grid point/option)", "lr", "dropout", "batch", "epochs", "best valid NDCG@10",
         "best epoch", "x popularity (valid)", "test NDCG@10 (x popularity)"], rows)


def _masked_batch(r: dict) -> int:
    # runs before the batch was recorded took bench/masked.py's batch 64 unless `train` said otherwise
    return r.get("batch_size") or r.get("train", {}).get("batch_size", 64)


def _masked_batches(d: dict) -> str:
    """The same options at several batch sizes, side by side (runs named
    <data>/<combo>/<grid point>/<options>-batch-<N>): best valid NDCG@10 (x popularity)."""
    cells, batches = {}, set()
    for run, r in d.items():
        found = re.fullmatch(r"(.+)-batch-\d+", run)
        if found:
            batches.add(_masked_batch(r))
            cells.setdefault(found[1], {})[_masked_batch(r)] = (
                f"{r['best_valid_ndcg10']:.4f} ({r['best_valid_ndcg10'] / r['popularity_valid_ndcg10']:.2f}x, "
                f"epoch {r['best_epoch']}/{r['epochs']})")
    if not cells:
        return ""
    order = sorted(batches)
    return _table(["data/combo/grid point/options"] + [f"batch {b}: best valid NDCG@10" for b in order],
                  [[head] + [row.get(b, "not run") for b in order] for head, row in cells.items()])


def scaling(d: dict) -> str:
    """Mean test AUC (and the train-test AUC gap) per strategy and size; the fitted laws."""
    summary = d["summary"]
    sizes = [p["dense_parameters"] for p in summary["none"]["sizes"]]
    shape = {p["dense_parameters"]: f"{p['d_model']}x{p['n_layers']}" for p in summary["none"]["sizes"]}
    header = ["strategy"] + [f"{_int(x)} ({shape[x]})" for x in sizes]
    cell = lambda p: f"{p['test_auc']:.4f} ± {p['test_auc_std']:.4f} (gap {p['gap']:+.3f})"  # noqa: E731
    rows = [[name] + [cell(p) for p in s["sizes"]] for name, s in summary.items()]
    def law(name, f):
        if not f:
            return [name, "-", "-", "-", "-", "-"]
        return [name, f"{f['a']:.4f}", f"{f['b']:.4g}", f"{f['c']:.3g}", f"{f['r2']:.3f}",
                "degenerate (flat: c > 3)" if f["degenerate"] else "power law"]

    laws = [law(name, s["fit"]) for name, s in summary.items()]
    setup = d["setup"]
    note = (f"\nTest AUC mean ± std over {setup['seeds']} seeds (gap: train AUC - test AUC) by dense "
            f"parameters (d_model x layers); {setup['train_examples']:,} training and "
            f"{setup['test_examples']:,} test examples, {setup['epochs']} epochs, history "
            f"{setup['max_history']}, {d['seconds'] / 60:.1f} min in all"
            + (f"; stopped early: {d['stopped']}" if d.get("stopped") else "") + ".\n\n")
    return (_table(header, rows) + note
            + _table(["strategy", "a", "b", "c", "R^2", "reading"], laws)
            + "\nFitted AUC = a - b * x^-c (x = dense parameters) to the mean test AUC per size.\n")


def recformer(d: dict) -> str:
    """bench/recformer.py: warm / cold / all test metrics per model, then the speed figures."""
    rows = []
    for r in d["results"]:
        rows.append([r["model"]] + [f"{r[part][m]:.4f}" for part in ("warm", "cold", "all")
                                    for m in ("ndcg@10", "recall@10", "mrr")])
    header = ["model"] + [f"{part} {m}" for part in ("warm", "cold", "all") for m in ("NDCG@10", "R@10", "MRR")]
    p, s, b = d["protocol"], d["speed"], d["budget"]
    share = s["reencode_share"]
    return _table(header, rows) + (
        f"\n{p['test_rows']:,} test rows ({d['results'][0]['cold']['rows']:,} with a cold target), "
        f"{p['held_out_items']:,} of {p['num_items'] - 3:,} items held out; {p['ranking']}.\n"
        f"Speed on this run ({threads(b['torch_threads'])}): pretraining "
        f"{s['pretrain_tokens_per_s']:,.0f} tokens/s, fine-tuning {s['finetune_tokens_per_s']:,.0f} tokens/s, "
        f"item encoding {s['encode_items_per_s']:,.0f} items/s; re-encoding the catalogue took "
        f"{'-' if share is None else f'{100 * share:.0f}%'} of a stage-1 epoch. Recformer run: "
        f"{b['recformer_seconds']:,.0f} s, ID model: {b['id_model_seconds']:,.0f} s.\n")


def recformer_serving(d: dict) -> str:
    """bench/recformer_serving.py: item encoding, served latency and throughput of the text model."""
    rows = [[name.replace("_", " "), str(s["requests"]), _f(1)(s["p50_ms"]), _f(1)(s["p99_ms"]),
             _f(1)(s["requests_per_s"])] for name, s in d["served"].items()]
    e, m = d["item_encoding"], d["model"]
    return _table(["served", "requests", "p50 ms", "p99 ms", "requests/s"], rows) + (
        f"\nItem encoding (what `seqrec export` and `seqrec items add` run): {e['items_per_s']:,.0f} "
        f"items/s ({e['items']:,} items, {threads(e['torch_threads'])}). Model: {m['recipe']}'s size "
        f"({m['n_layers']} layers x {m['d_model']}, {m['max_tokens']} tokens of the {m['max_items']} most "
        f"recent items); {d['machine']['note']}.\n")


def peers(d: dict) -> str:
    """bench/peers/compare.py: per dataset, each library x combo at its best-on-validation grid
    point; test metrics with seen items kept and excluded, strict full-catalogue ranks."""
    parts = []
    for dataset, libraries in d["best"].items():
        rows = []
        for library, combos in sorted(libraries.items()):
            for combo, r in sorted(combos.items()):
                kept, excl = r["test"]["kept"], r["test"]["excluded"]
                rows.append([combo, library, r["grid_point"], f"{r['valid']['kept']['ndcg@10']:.4f}",
                             f"{kept['ndcg@10']:.4f}", f"{kept['recall@10']:.4f}", f"{kept['mrr']:.4f}",
                             f"{excl['ndcg@10']:.4f}", f"{excl['recall@10']:.4f}",
                             str(r.get("epochs_run", "-")), _f(1)(r["seconds_per_epoch"])])
        rows.sort(key=lambda r: (r[0], r[1]))
        # each library's combo is chosen on validation; its test figure is then compared
        chosen = {lib: max(combos.items(), key=lambda kv: kv[1]["valid"]["kept"]["ndcg@10"])
                  for lib, combos in libraries.items()}
        line = ""
        peers_chosen = {k: v for k, v in chosen.items() if k != "seqrec"}
        if "seqrec" in chosen and peers_chosen:
            peer, (peer_combo, p) = max(peers_chosen.items(), key=lambda kv: kv[1][1]["test"]["kept"]["ndcg@10"])
            combo, r = chosen["seqrec"]
            ours, theirs = r["test"]["kept"]["ndcg@10"], p["test"]["kept"]["ndcg@10"]
            line = (f"\nCombo chosen on validation per library; test NDCG@10 (seen kept): seqrec {combo} "
                    f"{ours:.4f}, best peer {peer} {peer_combo} {theirs:.4f}: {ours / theirs:.2f}x "
                    f"({r['test']['rows']:,} test rows).\n")
        parts.append(f"**{dataset}**\n\n" + _table(
            ["combo", "library", "grid point", "valid NDCG@10", "test NDCG@10", "test Recall@10",
             "test MRR", "NDCG@10 seen excluded", "Recall@10 seen excluded", "epochs", "s/epoch"],
            rows) + line)
    g = d["grid"]
    shown = []
    for dataset, libraries in d["runs"].items():
        runs = [set(points) for combos in libraries.values() for points in combos.values()]
        keys = sorted(set().union(*runs))
        whole = all(r == set(keys) for r in runs)
        shown.append(f"{dataset} {', '.join(keys)}" + ("" if whole else " (not every library x combo at each)"))
    parts.append("Grid points run: " + "; ".join(shown) + ".")
    incremental = {ds for ds, libraries in d["runs"].items()
                   if any("windows" in run for combos in libraries.values() for points in combos.values()
                          for run in points.values())}
    windows = {len(run["windows"]) for ds in incremental for combos in d["runs"][ds].values()
               for points in combos.values() for run in points.values() if "windows" in run}
    max_len = {k: v for k, v in g["max_len"].items() if k not in incremental}
    parts.append(f"{' and '.join(max_len)}, every library: up to {g['epochs']} epochs, d_model {g['d_model']}, {g['layers']} layers, {g['heads']} heads, "
                 f"window (history items) {max_len}, batch {g['batch_size']}, {g['threads']} thread(s). Not run: "
                 + "; ".join(d.get("not_run", [])) + ".")
    parts.append(_run_settings({k: v for k, v in d["runs"].items() if k not in incremental}))
    for ds in sorted(incremental) if "daily_grid" in d else ():
        dg = d["daily_grid"]
        parts.append(f"\n{ds}: the incremental protocol, train on day t and evaluate on day t+1 (valid and test "
                     f"are means over the {'/'.join(map(str, sorted(windows)))} evaluated days), {dg['epochs']} "
                     f"epoch(s) per day, no early stopping (the next day is the future), window {dg['max_len'][ds]}, "
                     f"batch {dg['batch_size']}, {dg['threads']} thread(s). seqrec trains through `seqrec incremental`'s "
                     "loop and Transformers4Rec's model goes on training day after day; Cornac's TransformerRec has "
                     "no incremental fit, so it is refit from scratch on all days so far after each day (s/epoch: "
                     "its refit's time per epoch, over ever more days).")
    return "\n".join(parts) + "\n"


def _by_run(runs: dict, key: str, unit: str = "") -> str:
    """One setting of every run but Cornac's (whose fit has neither cap nor patience), from each
    run's own recorded config (runs can be split across invocations): the usual value, then the
    runs that differ; "" when no run records it."""
    values = {}
    for dataset, libraries in runs.items():
        for library, combos in libraries.items():
            for combo, points in combos.items():
                for run in points.values():
                    value = run.get("config", {}).get(key)
                    if value is not None and library != "cornac":
                        values.setdefault(value, []).append(f"{library} {combo} on {dataset}")
    if not values:
        return ""
    usual = max(values, key=lambda v: len(values[v]))
    others = "; ".join(f"{v:,.0f}{unit} for {', '.join(sorted(w))}" for v, w in sorted(values.items())
                       if v != usual)
    return f"{usual:,.0f}{unit}" + (f" ({others})" if others else "")


def _run_settings(runs: dict) -> str:
    """The training time cap and the patience of the runs (Cornac's fit runs every epoch)."""
    caps, patience = _by_run(runs, "max_seconds", " s"), _by_run(runs, "patience")
    parts = ([f"Training time cap per run: {caps}"] if caps else []) + ([f"patience {patience}"] if patience else [])
    return "; ".join(parts + ["Cornac's `fit` takes no time cap and runs every epoch."]) if parts else ""


def peers_speed(d: dict) -> str:
    """bench/peers/speed.py: ms per step of each library, alternating, and the ratios; then the
    validation NDCG@10 of seqrec trained in fp32 and in bf16."""
    rows = [[str(r["round"]), r["combo"], f"{r['load_average_1min']:.1f}",
             _f(1)(r["transformers4rec"]["ms_per_step"]), _f(1)(r["seqrec_fp32"]["ms_per_step"]),
             _f(1)(r["seqrec_bf16"]["ms_per_step"]), f"{r['ratio_fp32']:.2f}x", f"{r['ratio_bf16']:.2f}x",
             _int(r["transformers4rec"]["sequences_per_s"]), _int(r["seqrec_fp32"]["sequences_per_s"]),
             _int(r["seqrec_bf16"]["sequences_per_s"]), _int(r["transformers4rec"]["peak_rss_mb"]),
             _int(r["seqrec_fp32"]["peak_rss_mb"]), _int(r["seqrec_bf16"]["peak_rss_mb"])]
            for r in d["runs"]]
    s = d["setting"]
    text = _table(["round", "combo", "load", "Transformers4Rec ms/step", "seqrec fp32 ms/step",
                   "seqrec bf16 ms/step", "ratio fp32", "ratio bf16", "Transformers4Rec seq/s",
                   "seqrec fp32 seq/s", "seqrec bf16 seq/s", "Transformers4Rec peak RSS MB",
                   "seqrec fp32 peak RSS MB", "seqrec bf16 peak RSS MB"], rows) + (
        f"\nd_model {s['d_model']}, {s['layers']} layers, {s['heads']} heads, seq {s['seq']}, batch "
        f"{s['batch']}, {s['items']:,} items, {s['threads']} threads, median of {s['steps']} steps; "
        f"ratio = Transformers4Rec ms / seqrec ms (target >= {d['target_ratio']:g}x in fp32).\n")
    accuracy = d.get("accuracy") or []
    if accuracy:
        fmt = lambda v: ", ".join(f"{x:.4f}" for x in v)  # noqa: E731
        text += "\n" + _table(
            ["combo", "data", "epochs", "fp32 best valid NDCG@10", "bf16 best valid NDCG@10",
             "fp32 per epoch", "bf16 per epoch"],
            [[a["combo"], a["data"], str(a["epochs"]), f"{a['fp32']['best_valid_ndcg@10']:.4f}",
              f"{a['bf16']['best_valid_ndcg@10']:.4f}", fmt(a["fp32"]["valid_ndcg@10"]),
              fmt(a["bf16"]["valid_ndcg@10"])] for a in accuracy]) + (
            "\nseqrec trained with the same seed, learning rate 1e-3, batch 256, dropout 0.1, in fp32 "
            "and with bf16 autocast of the training step (evaluation in fp32).\n")
    return text


LAYOUTS = {"masked": masked, "etl": etl, "etl-repeat": etl, "readers": readers, "train": train, "train_data": train_data,
           "side_features": side_features,
           "ddp": ddp, "ddp-dropout0": ddp, "serving": serving, "serving-repeat": serving,
           "serving-two-stage": serving,
           "serving_row_errors_ab": serving_row_errors_ab, "scaling": scaling,
           "scaling-pretrain10": scaling, "soak": soak, "recformer": recformer,
           "recformer_serving": recformer_serving, "peers": peers,
           "peers_speed": peers_speed}


def generic(d: dict) -> str:
    rows = d.get("results", d.get("cases"))
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("no layout for this file and no list of 'results' or 'cases' rows in it")
    keys = [k for k, v in rows[0].items() if isinstance(v, (str, int, float, bool)) or v is None]
    fmt = lambda v: f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else (  # noqa: E731
        f"{v:.4g}" if isinstance(v, float) else str(v))
    return _columns(rows, [(k, k, fmt) for k in keys])


def render_table(name: str, results: Path = RESULTS) -> str:
    path = results / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{DOC.name}: a generated block names {path}, which does not exist")
    data = json.loads(path.read_text())
    try:
        return LAYOUTS.get(name, generic)(data)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: cannot render its table ({type(e).__name__}: {e})") from e


def render(text: str, results: Path = RESULTS) -> str:
    """The document with every generated block rewritten from its JSON file."""
    names = [m.group("name") for m in BLOCK.finditer(text)]
    missing = sorted({p.stem for p in results.glob("*.json")} - set(names))
    if missing:
        raise ValueError(f"{DOC.name}: no generated block for bench/results/{missing[0]}.json; add "
                         f"'<!-- generated from bench/results/{missing[0]}.json -->' and "
                         "'<!-- end generated -->' where its table belongs")
    # blank lines around the table: markdown ends a table at a blank line, not at a comment
    return BLOCK.sub(lambda m: m.group(1) + "\n" + render_table(m.group("name"), results) + "\n" + m.group(4),
                     text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = p.parse_args(argv)
    current = DOC.read_text()
    try:
        wanted = render(current)
    except (ValueError, FileNotFoundError) as e:
        print(f"bench/report.py: {e}", file=sys.stderr)
        return 2
    if args.check:
        if wanted != current:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                                       str(DOC), "generated"))
            print("docs/benchmarks.md is stale: run python bench/report.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        tmp = DOC.with_suffix(".md.tmp")
        tmp.write_text(wanted)
        tmp.replace(DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
