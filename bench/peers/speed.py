"""Training-step speed of seqrec and Transformers4Rec 23.12 side by side, alternating in the same
run (the machine is shared: only a same-run ratio means anything): the Transformers4Rec reference
setting (d_model 64, 2 layers, 2 heads, seq 20, batch 256, 4,922 items, 2 threads) for XLNet MLM
and GPT-2 CLM; seqrec in fp32 and with bf16 autocast.

    python bench/peers/speed.py [--rounds 2] [--steps 20]

Writes bench/results/peers_speed.json; the target is Transformers4Rec's ms/step >= 2x seqrec's
(fp32). Then (--accuracy-epochs, 0 to skip) each combo is trained by `seqrec train` on
MovieLens-100k (max_len 50) in fp32 and in bf16, same seed and epochs, and their validation
NDCG@10 is reported side by side: bf16 is only worth its speed if it learns the same.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results" / "peers_speed.json"
sys.path.insert(0, str(HERE))
from compare import VENVS  # noqa: E402

COMBOS = ["xlnet-mlm", "gpt2-clm"]
TARGET = 2.0


def _last_json(cmd: list[str], cwd: Path) -> dict:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bf16_accuracy(combo: str, epochs: int, threads: int) -> dict:
    """Validation NDCG@10 per epoch of `seqrec train` on MovieLens-100k in fp32 and in bf16."""
    import tempfile
    import time

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_data import ml100k_data
    from seqrec.training.trainer import TrainConfig, train

    torch.set_num_threads(threads)
    backbone, task = combo.split("-", 1)
    row = {"combo": combo, "data": "ml-100k (max_len 50)", "epochs": epochs}
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as out:
            cfg = TrainConfig(data_dir=ml100k_data(50), output_dir=out, epochs=epochs, patience=epochs,
                              lr=1e-3, batch_size=256, seed=42, tensorboard=False, precision=precision,
                              model={"backbone": backbone, "task": task, "d_model": 64, "n_layers": 2,
                                     "n_heads": 2, "dropout": 0.1})
            started = time.perf_counter()
            result = train(cfg, progress=False)
        row[precision] = {"valid_ndcg@10": [round(float(v), 4) for v in result.valid_history],
                          "best_valid_ndcg@10": round(float(max(result.valid_history)), 4),
                          "seconds": round(time.perf_counter() - started, 1)}
        print(f"{combo:10s} {precision} valid NDCG@10 per epoch {row[precision]['valid_ndcg@10']}", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--accuracy-epochs", type=int, default=4)
    args = p.parse_args()
    common = ["--steps", str(args.steps), "--threads", str(args.threads)]
    t4r = VENVS / "transformers4rec" / "bin" / "python"
    runs = []
    for r in range(1, args.rounds + 1):
        for combo in COMBOS:
            row = {"round": r, "combo": combo, "load_average_1min": round(os.getloadavg()[0], 2)}
            row["transformers4rec"] = _last_json([str(t4r), "step_transformers4rec.py", "--combo", combo, *common], HERE)
            for precision in ("fp32", "bf16"):
                row[f"seqrec_{precision}"] = _last_json(
                    [sys.executable, str(ROOT / "bench" / "train.py"), "--case", combo, "--precision", precision,
                     *common], ROOT)
            row["ratio_fp32"] = round(row["transformers4rec"]["ms_per_step"] / row["seqrec_fp32"]["ms_per_step"], 2)
            row["ratio_bf16"] = round(row["transformers4rec"]["ms_per_step"] / row["seqrec_bf16"]["ms_per_step"], 2)
            runs.append(row)
            print(f"round {r} {combo:10s} Transformers4Rec {row['transformers4rec']['ms_per_step']:7.1f} ms  "
                  f"seqrec fp32 {row['seqrec_fp32']['ms_per_step']:7.1f} ms ({row['ratio_fp32']:.2f}x)  "
                  f"bf16 {row['seqrec_bf16']['ms_per_step']:7.1f} ms ({row['ratio_bf16']:.2f}x)", flush=True)
    summary = {c: {"ratio_fp32_median": statistics.median(x["ratio_fp32"] for x in runs if x["combo"] == c),
                   "ratio_bf16_median": statistics.median(x["ratio_bf16"] for x in runs if x["combo"] == c)}
               for c in COMBOS}
    accuracy = [bf16_accuracy(combo, args.accuracy_epochs, args.threads) for combo in COMBOS
                if args.accuracy_epochs]
    RESULTS.write_text(json.dumps({
        "what": "ms per training step, Transformers4Rec 23.12 (plain torch loop) and seqrec alternating in one run",
        "setting": {"d_model": 64, "layers": 2, "heads": 2, "seq": 20, "batch": 256, "items": 4922,
                    "threads": args.threads, "steps": args.steps},
        "target_ratio": TARGET, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "summary": summary, "runs": runs, "accuracy": accuracy}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
