"""Transformers4Rec 23.12 on the shared splits, in its own virtualenv (bench/peers/setup_envs.sh):
the library's input block, transformer block and next-item task in a plain torch loop (its HF
Trainer subclass breaks on current dependencies). Each training sequence is given as its last
max_len items, the library's usual input (daily windows: the same model trained on day after
day, as the library's incremental examples do); scoring reads the library's own inference position
(the last item for CLM, the appended mask for MLM / PLM / RTD)."""
from __future__ import annotations

import copy

import numpy as np
import torch
import transformers4rec.torch as tr
from merlin.schema import ColumnSchema, Schema, Tags
from transformers4rec.config import transformer as t4r_configs

import protocol
from runner import arguments, fit, fit_windows, write

BACKBONES = {"gpt2": t4r_configs.GPT2Config, "bert": t4r_configs.BertConfig, "xlnet": t4r_configs.XLNetConfig,
             "electra": t4r_configs.ElectraConfig}
TASKS = {"gpt2": ("clm",), "bert": ("mlm",), "xlnet": ("mlm", "plm", "clm"), "electra": ("rtd", "mlm")}
ITEMS = "item_id-list"


def build(args, num_items: int):
    backbone, task = args.combo.split("-", 1)
    if backbone not in BACKBONES or task not in TASKS[backbone]:
        raise SystemExit(f"Transformers4Rec runs no {args.combo!r} here")
    column = ColumnSchema(ITEMS, tags=[Tags.ITEM_ID, Tags.CATEGORICAL, Tags.LIST, Tags.ITEM, Tags.ID],
                          dtype=np.int64, is_list=True, is_ragged=False,
                          properties={"domain": {"min": 0, "max": num_items - 1, "name": "item_id"},
                                      "value_count": {"min": args.max_len, "max": args.max_len}})
    inputs = tr.TabularSequenceFeatures.from_schema(
        Schema([column]), max_sequence_length=args.max_len, continuous_projection=None,
        masking=task, d_output=args.d_model)
    config = BACKBONES[backbone].build(d_model=args.d_model, n_head=args.heads, n_layer=args.layers,
                                       total_seq_length=args.max_len, dropout=args.dropout)
    return config.to_torch_model(inputs, tr.NextItemPredictionTask(weight_tying=True)), task


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    windows = protocol.load_windows(args.splits) if protocol.is_windows(args.splits) else None
    splits = None if windows is not None else protocol.load_splits(args.splits)
    model, task = build(args, (windows or splits).num_items)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    # the masked tasks read an appended [MASK]: the history leaves it one free slot
    window = args.max_len if task == "clm" else args.max_len - 1

    def epoch_on(train: torch.Tensor) -> float:
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, steps = 0.0, 0
        for i in range(0, len(order), args.batch_size):
            out = model({ITEMS: train[order[i:i + args.batch_size]]}, training=True)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            total, steps = total + float(out["loss"].detach()), steps + 1
        return total / steps

    def padded(rows: protocol.Rows) -> torch.Tensor:
        return torch.from_numpy(rows.padded_right(args.max_len))

    @torch.no_grad()
    def score(histories: protocol.Rows) -> np.ndarray:
        model.eval()
        batch = torch.zeros(len(histories), args.max_len, dtype=torch.long)
        batch[:, :window] = torch.from_numpy(histories.padded_right(window))
        return model({ITEMS: batch}).numpy()

    if windows is not None:  # daily: the same model trained on on, day after day
        result = fit_windows(args, windows, lambda rows: epoch_on(padded(rows)), score)
    else:
        train = padded(splits.train)
        result = fit(args, splits, lambda: epoch_on(train), score, lambda: copy.deepcopy(model.state_dict()),
                     lambda state: model.load_state_dict(state))
    write(args, "transformers4rec-23.12.0", result)


if __name__ == "__main__":
    main()
