"""Load test of the served MovieLens-100k model over gRPC: latency at concurrency 1, requests/s at
higher concurrency, 10% bad requests mixed in; prints a table, writes bench/results/serving.json.

    python bench/serving.py                       # builds artifacts/ml-100k/* if missing
    python bench/serving.py --requests 2000       # a quicker look
    python bench/serving.py --two-stage           # + retrieval (top 100) + ranker, same rounds

Client and server share the machine (as in the targets). The same server also serves a
reference floor, `floor`: a bare two-step python-backend ensemble (identity lookup -> slice,
dynamic batching, the same client) measured in the same run, so the seqrec figures read as
ratios against what any two-step python ensemble costs here. Each model's server-side time
split (queue, input copies, compute, output copies per step) comes from Triton's statistics,
and the CPU each process used per request (client, server, each python stub) from /proc. Every good answer is checked against the
answer the same session got at concurrency 1, so batching under load cannot silently mix rows
(items whose scores tie to 1e-5 may trade places under batching: counted apart, as tie swaps).
With --two-stage the same server also serves the two-stage export of the same model (its top
`--candidates` re-ranked by the ranker of configs/ranker-ml-100k.yaml, trained when missing) as
`two_stage`, measured in the same rounds. `perf_analyzer` is not used: the pip package `perf-analyzer` resolves here only to a 0.1.0
placeholder without the binary; the load generator is tritonclient's asyncio gRPC client.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from loadgen import (BAD_KINDS, drive, ensure_model, ensure_two_stage, percentiles,  # bench/ beside this file
                     same_answer, workload)
from seqrec.client import RecommendationError, RecommenderClient

ROOT = Path(__file__).resolve().parents[1]
FLOOR, FLOOR_LOOKUP, FLOOR_SLICE = "floor", "floor_lookup", "floor_slice"
TWO_STAGE = "two_stage"  # the two-stage export's ensemble, renamed beside seqrec's

# The floor's two python models: no work beyond moving the tensors through.
FLOOR_LOOKUP_PY = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
            "encoded_items", pb_utils.get_input_tensor_by_name(r, "item_ids").as_numpy())])
            for r in requests]
"""
FLOOR_SLICE_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            items = pb_utils.get_input_tensor_by_name(r, "encoded_items").as_numpy()[:, :10]
            out.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("top_item_ids", np.ascontiguousarray(items)),
                pb_utils.Tensor("top_scores", np.zeros(items.shape, dtype=np.float32))]))
        return out
"""


def with_floor(repo: Path, into: Path, max_batch_size: int = 64) -> Path:
    """A copy of the repository plus the floor ensemble (configs rendered like seqrec's)."""
    from seqrec.client import contract as C
    from seqrec.model_repository import contract

    shutil.copytree(repo, into)
    encoded, outputs = C.ENCODED_ITEMS, (C.TOP_ITEM_IDS, C.TOP_SCORES)
    for name, code, inputs, outs in ((FLOOR_LOOKUP, FLOOR_LOOKUP_PY, (C.ITEM_IDS,), (encoded,)),
                                     (FLOOR_SLICE, FLOOR_SLICE_PY, (encoded,), outputs)):
        (into / name / "1").mkdir(parents=True)
        (into / name / "1" / "model.py").write_text(code)
        (into / name / "config.pbtxt").write_text(contract.python_model(
            name, inputs, outs, max_batch_size=max_batch_size, kind="KIND_CPU", count=1,
            queue_delay_us=0, parameters={}))
    (into / FLOOR).mkdir()
    (into / FLOOR / "1").mkdir()
    (into / FLOOR / "config.pbtxt").write_text(contract.ensemble(
        FLOOR, (C.ITEM_IDS,), outputs, [(FLOOR_LOOKUP, (C.ITEM_IDS,), (encoded,)),
                                        (FLOOR_SLICE, (encoded,), outputs)],
        max_batch_size=max_batch_size))
    return into


def add_renamed(repo: Path, into: Path, name: str) -> tuple[str, ...]:
    """Another export's three models copied into `into` as <name>, <name>_preprocess and
    <name>_model (configs renamed, the ensemble's steps pointed at the renamed members)."""
    from google.protobuf import text_format

    from seqrec.client import contract as C
    from seqrec.model_repository.contract import read_config

    names = {C.ENSEMBLE: name, C.PREPROCESS: f"{name}_preprocess", C.MODEL: f"{name}_model"}
    for old, new in names.items():
        shutil.copytree(repo / old, into / new)
        config = read_config(into / new / "config.pbtxt")
        config.name = new
        for step in config.ensemble_scheduling.step:
            step.model_name = names[step.model_name]
        (into / new / "config.pbtxt").write_text(text_format.MessageToString(config))
    return tuple(names.values())


def server_split(url: str, models) -> dict:
    """Per model: mean microseconds per request in the queue and in each compute phase, and
    requests per execution (how much dynamic batching happened), from Triton's statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    out = {}
    for name in models:
        s = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
        n = max(int(s.get("inference_count", 0)), 1)
        stats = s.get("inference_stats", {})
        out[name] = {phase: round(int(stats.get(phase, {}).get("ns", 0)) / n / 1000, 1)
                     for phase in ("queue", "compute_input", "compute_infer", "compute_output")}
        out[name]["requests_per_execution"] = round(n / max(int(s.get("execution_count", 1)), 1), 2)
    client.close()
    return out


def cpu_seconds(server_pid: int, models) -> dict:
    """CPU seconds (user + system) used so far by this client process, the server and each
    python stub (named by the model whose folder its command line holds)."""
    from seqrec.model_repository.server import group_processes

    out = {"client": time.process_time(), "server": 0.0}
    for process in group_processes(server_pid).values():  # the server's process group
        name = next((m for m in models if f"/{m}/".encode() in process.command), "server")
        out[name] = out.get(name, 0.0) + process.cpu_seconds
    return out


def sequential(url: str, requests, model: str = "seqrec") -> dict:
    """Concurrency 1 with the blocking client: per-request latency of good requests."""
    latencies, answers, failed_good, bad_ok = [], {}, 0, 0
    with RecommenderClient(url, model_name=model, timeout_s=30) as client:
        for key, items, bad in tqdm(requests, desc="concurrency 1", leave=False):
            t0 = time.perf_counter()
            try:
                rec = client.recommend(items)
            except RecommendationError:
                failed_good += not bad
                continue
            finally:
                dt = time.perf_counter() - t0
            if bad:
                bad_ok += 1
                continue
            latencies.append(dt * 1000)
            answers.setdefault(key, rec)
    return dict(latencies=np.array(latencies), answers=answers, failed_good=failed_good,
                bad_answered=bad_ok)


def _concurrent(url: str, requests, concurrency: int, answers: dict,
                model: str = "seqrec") -> dict:
    stats = dict(failed_good=0, mismatched=0, tie_swaps=0, bad_answered=0, latencies=[])

    def record(i, answer, t0, t1):
        key, _, bad = requests[i]
        if isinstance(answer, RecommendationError):
            stats["failed_good"] += not bad
            return
        stats["latencies"].append((t1 - t0) * 1000)
        if bad:
            stats["bad_answered"] += 1
        elif key in answers:
            stats["mismatched"] += not same_answer(answer, answers[key])
            stats["tie_swaps"] += answer.item_ids != answers[key].item_ids

    stats["seconds"] = asyncio.run(drive(url, requests, concurrency, record, model))
    stats["latencies"] = np.array(stats["latencies"])
    return stats


def profile(repo: Path, requests, rows=(1, 16)) -> dict:
    """Microseconds per call of each part of the served path, in this process with one torch
    thread (as the model step runs): the preprocessing runtime, the model step's batching and
    answers, and the scorer as the plain torch.export program and compiled by AOTInductor."""
    import torch

    from seqrec.client import contract as C
    from seqrec.model_repository.contract import read_config
    from seqrec.model_repository.export import versions
    from seqrec.model_repository.lookup import ItemLookup
    from seqrec.model_repository.runtime import Preprocessor, Ranker
    from seqrec.model_repository.safe_program import CompiledProgram

    torch.set_num_threads(1)
    here = repo / C.MODEL / str(versions(repo / C.MODEL)[-1])  # the version served

    def us(fn, n=200):
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return round((time.perf_counter() - t0) / n * 1e6, 1)

    pre = Preprocessor(ItemLookup.load(repo / C.PREPROCESS / str(versions(repo / C.PREPROCESS)[-1])))
    ranker = Ranker(np.load(here / "item_vocabulary.npy"), 10)
    good = [items for _, items, bad in requests if not bad]
    out: dict = {}
    # histories as the workload sends them (up to the served window), not a shorter stand-in
    served_window = int(read_config(repo / C.MODEL / "config.pbtxt").parameters["window"].string_value)
    for n in rows:
        cut = [list(s[-served_window:]) for s in good[:n]]
        width = max(len(s) for s in cut)
        batch = np.array([s + [0] * (width - len(s)) for s in cut])
        lengths = np.array([[len(s)] for s in cut])
        get = {C.ITEM_IDS.name: batch, C.LENGTHS.name: lengths}.get
        step = pre.run([pre.parse(get)])[0]
        items = step[C.ENCODED_ITEMS.name]
        window = min(items.shape[1], served_window)
        args = (torch.from_numpy(items),
                torch.from_numpy(np.ascontiguousarray(step[C.STEP_ARGS.name][:, C.ARG_EXCLUDE:])),
                torch.empty((10, 0)), None, torch.empty((window, 0)))
        part = {"preprocess_runtime": us(lambda: pre.run([pre.parse(get)])),
                "ranker_gather": us(lambda: ranker.gather([step]))}
        with torch.inference_mode():
            for name, load in (("scorer_program", lambda p: torch.export.load(p).module()),
                               ("scorer_compiled", CompiledProgram)):
                path = here / ("scorer.pt2" if name == "scorer_program" else "scorer_compiled.pt2")
                if path.is_file():
                    scorer = load(str(path))
                    part[name] = us(lambda: scorer(*args), n=50)
            ids, scores = scorer(*args)
        b = ranker.gather([step])
        part["ranker_answers"] = us(lambda: ranker.answers(b, ids.numpy(), scores.numpy()))
        out[f"{n}_rows"] = part
    return out


def summarise(rows) -> list[dict]:
    """One row per (model, concurrency): counts summed over the rounds, rates and latency
    percentiles as the median of the rounds'."""
    out = []
    for key in dict.fromkeys((r["model"], r["concurrency"]) for r in rows):
        group = [r for r in rows if (r["model"], r["concurrency"]) == key]
        row = dict(model=key[0], concurrency=key[1])
        for name in ("requests", "bad", "failed_good", "mismatched", "tie_swaps", "bad_answered"):
            row[name] = sum(r[name] for r in group)
        for name in group[0]:
            if name.endswith("_ms") or name == "requests_per_s":
                row[name] = round(float(np.median([r[name] for r in group])), 3)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/ml-100k.yaml"))
    ap.add_argument("--repository", help="an exported repository (default: the recipe's)")
    ap.add_argument("--epochs", type=int, default=5, help="when the model must be trained first")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--bad-share", type=float, default=0.1)
    ap.add_argument("--concurrency", default="8,16,32")
    ap.add_argument("--rounds", type=int, default=3,
                    help="floor and seqrec measured in turn this many times (load drifts on a "
                         "shared machine; the table gives each figure's median over the rounds)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/serving.json"))
    ap.add_argument("--no-compile", action="store_true",
                    help="serve the plain torch.export program (no AOTInductor scorer)")
    ap.add_argument("--two-stage", action="store_true",
                    help="also serve and measure retrieval + ranking (the ranker of --ranker-config)")
    ap.add_argument("--ranker-config", default=str(ROOT / "configs/ranker-ml-100k.yaml"))
    ap.add_argument("--candidates", type=int, default=100, help="two-stage: retrieved per request")
    args = ap.parse_args()

    from seqrec.config import build, load_recipe
    from seqrec.model_repository.export import ExportConfig
    from seqrec.model_repository.server import TritonServer

    repo = (Path(args.repository) if args.repository
            else ensure_model(args.config, args.epochs, not args.no_compile))
    data_dir = Path(build(ExportConfig, load_recipe(args.config).get("export")).data_dir)
    requests = workload(data_dir, args.requests, args.bad_share)
    rows = []

    def measure(url, model, reqs, round_):
        n_bad = sum(b for _, _, b in reqs)
        seq = sequential(url, reqs, model)
        rows.append(dict(model=model, round=round_, concurrency=1, requests=len(reqs), bad=n_bad,
                         failed_good=seq["failed_good"], mismatched=0, tie_swaps=0,
                         bad_answered=seq["bad_answered"],
                         requests_per_s=round(len(seq["latencies"]) / (seq["latencies"].sum() / 1000
                                                                       + 1e-9), 1),
                         **percentiles(seq["latencies"])))
        for c in (int(x) for x in args.concurrency.split(",")):
            before = cpu_seconds(server.pid, steps)
            st = _concurrent(url, reqs, c, seq["answers"], model)
            after = cpu_seconds(server.pid, steps)
            cpu[model, c].append({k: (after[k] - before.get(k, 0.0)) / len(reqs) * 1e6
                                  for k in after if after[k] > before.get(k, 0.0)})
            rows.append(dict(model=model, round=round_, concurrency=c, requests=len(reqs),
                             bad=n_bad,
                             failed_good=st["failed_good"], mismatched=st["mismatched"],
                             tie_swaps=st["tie_swaps"],
                             bad_answered=st["bad_answered"],
                             requests_per_s=round(len(reqs) / st["seconds"], 1),
                             **percentiles(st["latencies"])))

    two_stage = (ensure_two_stage(args.config, args.ranker_config, args.candidates, args.epochs,
                                  not args.no_compile) if args.two_stage else None)
    models = (FLOOR, "seqrec") + ((TWO_STAGE,) if two_stage else ())
    cpu = defaultdict(list)  # (model, concurrency) -> per round: CPU us per request per process
    with tempfile.TemporaryDirectory() as tmp:
        served = with_floor(repo, Path(tmp) / "repo")
        extra = add_renamed(two_stage, served, TWO_STAGE) if two_stage else ()
        steps = ("seqrec_preprocess", "seqrec_model", FLOOR_LOOKUP, FLOOR_SLICE) + extra
        with TritonServer(served) as server:
            for model in models:  # first calls load lazily-built state
                with RecommenderClient(server.grpc_url, model_name=model) as warm:
                    for _, items, bad in requests[:50]:
                        if not bad:
                            warm.recommend(items)
            per_round = -(-len(requests) // args.rounds)
            for r in tqdm(range(args.rounds), desc="rounds"):
                chunk = requests[r * per_round:(r + 1) * per_round]
                for model in models:  # in turn within each round
                    # the floor answers anything: good requests only
                    measure(server.grpc_url, model, [q for q in chunk if not q[2]] if model == FLOOR
                            else chunk, r)
            split = server_split(server.grpc_url, ("seqrec", "seqrec_preprocess", "seqrec_model",
                                                   FLOOR, FLOOR_LOOKUP, FLOOR_SLICE) + extra)
            startup = server.startup_seconds
    summary = summarise(rows)
    by = {(r["model"], r["round"], r["concurrency"]): r for r in rows}

    def ratios_of(model, reference):  # per round (the models minutes apart), then the median
        def ratio(c, key):
            return round(float(np.median([by[model, r, c][key] / by[reference, r, c][key]
                                          for r in range(args.rounds)])), 2)
        return {f"c{c}": dict(p50=ratio(c, "p50_ms"), requests_per_s=ratio(c, "requests_per_s"))
                for c in sorted({r["concurrency"] for r in rows})}
    ratios = ratios_of("seqrec", FLOOR)
    # concurrency 1: requests/s is 1 / mean latency of good requests (the loop has no think time)
    result = dict(
        what="gRPC load on the served MovieLens-100k GPT-2 ensemble and on the bare two-step "
             "python-backend floor in the same server and run (client and server on the same "
             "machine); latencies of good requests, measured on the client"
             + ("; with the same model's two-stage export (retrieval + ranker) as two_stage"
                if two_stage else ""),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                     python=platform.python_version(), load_average=os.getloadavg()),
        repository=str(repo), server_start_s=round(startup, 1), bad_share=args.bad_share,
        bad_kinds=list(BAD_KINDS), perf_analyzer="not available (pip perf-analyzer is a 0.1.0 "
        "placeholder here)",
        targets=dict(p50_c1_vs_floor="<= 2x", requests_per_s_c16=1000, p99_ms_c16=25,
                     failed_or_changed_good=0),
        rounds=args.rounds, seqrec_vs_floor=ratios, server_split_us_per_request=split,
        # where the CPU goes under load: per process, median over the rounds (client = this one)
        cpu_us_per_request={f"{m}_c{c}": {k: round(float(np.median([r.get(k, 0.0) for r in v])))
                                           for k in dict.fromkeys(k for r in v for k in r)}
                            for (m, c), v in cpu.items()},
        **(dict(two_stage=dict(
            model=TWO_STAGE, repository=str(two_stage), candidates=args.candidates,
            ranker_config=str(Path(args.ranker_config).resolve().relative_to(ROOT)),
            vs_floor=ratios_of(TWO_STAGE, FLOOR), vs_seqrec=ratios_of(TWO_STAGE, "seqrec")))
           if two_stage else {}),
        profile_us_per_call=profile(repo, requests), results=summary, rounds_results=rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    cols = ["model", "concurrency", "requests", "bad", "failed_good", "mismatched", "tie_swaps",
            "requests_per_s",
            "p50_ms", "p90_ms", "p99_ms"]
    print(" ".join(f"{c:>14}" for c in cols))
    for r in summary:
        print(" ".join(f"{r[c]:>14}" for c in cols))
    print("seqrec / floor:", json.dumps(ratios))
    if two_stage:
        print("two_stage / floor:", json.dumps(result["two_stage"]["vs_floor"]))
        print("two_stage / seqrec:", json.dumps(result["two_stage"]["vs_seqrec"]))
    print("server split (us per request):", json.dumps(split, indent=1))
    print("CPU us per request:", json.dumps(result["cpu_us_per_request"], indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
