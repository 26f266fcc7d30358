"""Recformer training: item text -> tokenizer -> pretraining (item-item contrastive + lambda * MLM)
-> two-stage fine-tuning -> warm / cold evaluation over the full catalogue.

Fine-tuning (the paper's Algorithm 1): stage 1 re-encodes every item into the item matrix I at
the start of each epoch and trains the encoder against it; stage 2 starts from stage 1's best
state and keeps I as stage 1's best left it. Each stage keeps its best state on validation
(NDCG@10 of the rows whose target is warm: held-out items never guide a choice). The variants:

| variant           | stage 1 | I in stage 1 | stage 2 | I in stage 2 |
| fix (the paper)   | yes     | fixed        | yes     | fixed        |
| original          | yes     | fixed        | yes     | trainable    |
| variable          | yes     | trainable    | yes     | fixed        |
| training-only     | yes     | fixed        | no      |              |
| fine-tuning-only  | no      |              | yes     | trainable    |

fixed: I is computed without gradients; trainable: I (re-encoded as stage 1 starts each epoch,
or as stage 2 starts) is a parameter the optimizer updates too. With stage 1 off, stage 2's I is
the pretrained model's encoding.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from seqrec.config import structure_nested
from seqrec.preprocessing.arrays import FIRST_ITEM_ID, ITEM_LIST
from seqrec.preprocessing.item_text import (TOKENIZER_FILE, ItemTokens, flatten, item_texts, item_tokens,
                                            save_text_meta, train_tokenizer)

from ..data import Ragged, read_columns
from ..evaluation import block_seen, rank_metrics, strict_ranks
from ..loop import check_run_options, resolve_device
from .batching import gather_prefixes, length_batches, pack, prefix_examples, single_items, to_tensors
from .coldstart import cold_items, drop_items, split_targets
from .losses import contrastive_loss, finetune_loss, mask_tokens, mlm_loss
from .model import ITEM_MATRIX_FILE, Recformer, RecformerModelConfig, build_recformer, load_recformer, save_recformer

Variant = Literal["fix", "original", "variable", "training-only", "fine-tuning-only"]
# variant -> (stage 1's I, stage 2's I); None: the stage does not run
VARIANTS: dict[str, tuple[str | None, str | None]] = {
    "fix": ("fixed", "fixed"), "original": ("fixed", "trainable"), "variable": ("trainable", "fixed"),
    "training-only": ("fixed", None), "fine-tuning-only": (None, "trainable")}
ML100K_ATTRIBUTES = {"title": "movie_title", "genre": "class", "year": "release_year"}


@dataclass
class ItemSource:
    path: str | None = None  # a RecBole `.item` / `.text` file; null: MovieLens-100k's ml-100k.item
    attributes: dict[str, str] = field(default_factory=lambda: dict(ML100K_ATTRIBUTES))  # key -> column
    budget: int | dict[str, int] = 32  # value tokens kept per attribute (one for all, or per key)

    def __post_init__(self):
        if not self.attributes:
            raise ValueError("attributes: name at least one item attribute")
        if isinstance(self.budget, dict):
            missing = [k for k in self.attributes if k not in self.budget]
            if missing:
                raise ValueError(f"budget: no token budget for attribute(s) {missing}")


@dataclass
class PretrainConfig:
    epochs: int = 1  # 0: no pretraining (fine-tuning starts from random weights)
    steps_per_epoch: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    mlm_weight: float = 0.1  # lambda in loss = IIC + lambda * MLM
    mlm_prob: float = 0.15


@dataclass
class FinetuneConfig:
    variant: Variant = "fix"
    stage1_epochs: int = 3
    stage2_epochs: int = 3
    steps_per_epoch: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    patience: int = 3  # epochs without a better validation NDCG@10 before a stage stops


@dataclass
class RecformerConfig:
    data_dir: str = "artifacts/ml-100k/data"
    output_dir: str = "artifacts/recformer/model"
    items: ItemSource = field(default_factory=ItemSource)
    vocab_size: int = 8000  # BPE vocabulary trained on the warm items' text
    cold_fraction: float = 0.2  # items held out of all training
    seed: int = 42
    device: str = "cpu"
    weight_decay: float = 0.01
    eval_batch_size: int = 64
    # evaluation never ranks an item of the row's own history (a MovieLens user rates a film once)
    eval_exclude_seen: bool = True
    encode_batch_size: int = 256
    valid_rows: int | None = None  # validate on this many (seeded) warm-target valid rows: faster epochs
    model: RecformerModelConfig = field(default_factory=RecformerModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self):
        structure_nested(self)
        check_run_options("fp32", self.device)
        if not 0.0 <= self.cold_fraction < 1.0:
            raise ValueError(f"cold_fraction {self.cold_fraction}: must be in [0, 1)")


@dataclass
class Speed:
    tokens: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------------------- data

@dataclass
class RecformerData:
    num_items: int
    held_out: np.ndarray  # bool [num_items]: cold items
    tokens: ItemTokens
    train: Ragged  # warm-only training sequences
    valid: Ragged  # warm-target valid rows (selection)
    test: Ragged
    tokenizer: object


def read_items(source: ItemSource):
    from seqrec.preprocessing.datasets import movielens_100k_dir
    from seqrec.preprocessing.readers.recbole import read_recbole_items

    return read_recbole_items(Path(source.path) if source.path else movielens_100k_dir() / "ml-100k.item")


def prepare(cfg: RecformerConfig, out: Path) -> RecformerData:
    """The split, the item texts through the item-text workflow, the tokenizer trained on the
    warm items' text, every item's tokens (saved to `out` with the tokenizer and the split)."""
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow

    vocabulary = item_vocabulary(load_workflow(Path(cfg.data_dir) / "workflow"))
    num_items = len(vocabulary)
    rows = {s: read_columns(Path(cfg.data_dir) / f"{s}.parquet", [ITEM_LIST])[ITEM_LIST]
            for s in ("train", "valid", "test")}
    held_out = cold_items(num_items, cfg.cold_fraction, cfg.seed)
    train = drop_items(rows["train"], held_out)
    warm_valid, _ = split_targets(rows["valid"], held_out)
    if cfg.valid_rows is not None and cfg.valid_rows < len(warm_valid):
        warm_valid = np.sort(np.random.default_rng(cfg.seed).choice(warm_valid, cfg.valid_rows, replace=False))
    keys = list(cfg.items.attributes)
    texts = item_texts(read_items(cfg.items), cfg.items.attributes, vocabulary)
    flat = flatten(texts, keys)
    warm_text = ~held_out[texts["item_id"].to_numpy(dtype=np.int64)]
    tokenizer = train_tokenizer(flat[warm_text], cfg.vocab_size)
    tokens = item_tokens(texts, keys, cfg.items.budget, tokenizer, num_items)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / TOKENIZER_FILE))
    tokens.save(out)
    save_text_meta(out, keys, cfg.items.budget)
    np.save(out / "held_out.npy", held_out)
    return RecformerData(num_items, held_out, tokens, train, rows["valid"].take(warm_valid), rows["test"], tokenizer)


# ---------------------------------------------------------------------------- encoding, scoring

def _pack(model: Recformer, tokens: ItemTokens, values, offsets):
    c = model.cfg
    return pack(tokens, values, offsets, c.max_tokens, c.max_items, c.attention_window)


def real_tokens(batch: dict[str, np.ndarray]) -> int:
    return int(batch["attention_mask"].sum())


@torch.no_grad()
def encode_items(model: Recformer, tokens: ItemTokens, batch_size: int, speed: Speed | None = None,
                 items: np.ndarray | None = None) -> torch.Tensor:
    """[num_items, d]: every item encoded alone (reserved ids too: they are never ranked), in
    batches of similar token counts; with `items`, [len(items), d]: those items only."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    items = np.arange(tokens.num_items) if items is None else np.asarray(items, dtype=np.int64)
    out = torch.zeros(len(items), model.cfg.d_model, device=device)
    for index in length_batches(tokens.lengths[items], batch_size):
        values, offsets = single_items(items[index])
        out[torch.from_numpy(index).to(device)] = model.represent(to_tensors(_pack(model, tokens, values, offsets), device))
    if speed is not None:
        speed.tokens += len(items)  # items, for items/s
        speed.seconds += time.perf_counter() - started
    model.train(was_training)
    return out


@torch.no_grad()
def evaluate_rows(model: Recformer, tokens: ItemTokens, rows: Ragged, item_matrix: torch.Tensor,
                  batch_size: int, exclude_seen: bool = True) -> np.ndarray:
    """Strict 0-based rank of each row's last item given the items before it, over every real
    item (reserved ids excluded; the history's items too with exclude_seen)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    histories, targets = rows.drop_last(1), rows.last().astype(np.int64)
    ranks = np.empty(len(rows), dtype=np.int64)
    for index in length_batches(histories.lengths, batch_size):
        part = histories.take(index)
        seq = model.represent(to_tensors(_pack(model, tokens, part.values, part.offsets), device))
        scores = model.scores(seq, item_matrix).float()
        scores[:, :FIRST_ITEM_ID] = float("-inf")
        scores = scores.cpu().numpy()
        if exclude_seen:
            block_seen(scores, part)
        ranks[index] = strict_ranks(scores, targets[index])
    model.train(was_training)
    return ranks


def split_metrics(ranks: np.ndarray, rows: Ragged, held_out: np.ndarray) -> dict[str, dict]:
    warm, cold = split_targets(rows, held_out)
    return {name: {**rank_metrics(part), "rows": int(len(part))}
            for name, part in (("all", ranks), ("warm", ranks[warm]), ("cold", ranks[cold]))}


# ---------------------------------------------------------------------------- epochs

def _optimizer(params, lr: float, weight_decay: float):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _batches(n: int, batch_size: int, steps: int | None, generator: torch.Generator):
    order = torch.randperm(n, generator=generator).numpy()
    if steps:
        order = order[: steps * batch_size]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pretrain_epoch(model: Recformer, data: RecformerData, examples, cfg: PretrainConfig, optimizer,
                   generator: torch.Generator, speed: Speed) -> dict[str, float]:
    """One pass of IIC + lambda * MLM over (history -> next item) examples of the warm training
    sequences; the in-batch next items are each other's negatives."""
    device = next(model.parameters()).device
    model.train()
    rows, ends = examples
    totals = np.zeros(3)
    steps = 0
    for pick in _batches(len(rows), cfg.batch_size, cfg.steps_per_epoch, generator):
        started = time.perf_counter()
        values, offsets, nxt = gather_prefixes(data.train.values, data.train.offsets, rows[pick], ends[pick],
                                               model.cfg.max_items)
        seq_np = _pack(model, data.tokens, values, offsets)
        item_np = _pack(model, data.tokens, *single_items(nxt))
        seq, labels = mask_tokens(to_tensors(seq_np, device), model.cfg.vocab_size, generator, cfg.mlm_prob)
        hidden = model.hidden(seq)
        items = model.represent(to_tensors(item_np, device))
        iic = contrastive_loss(model.scores(model.pool(hidden, seq["attention_mask"]), items), torch.from_numpy(nxt).to(device))
        mlm = mlm_loss(model.mlm_head(hidden), labels)
        loss = iic + cfg.mlm_weight * mlm
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        totals += [loss.item(), iic.item(), mlm.item()]
        steps += 1
        speed.tokens += real_tokens(seq_np) + real_tokens(item_np)
        speed.seconds += time.perf_counter() - started
    mean = totals / max(steps, 1)
    return {"loss": float(mean[0]), "iic": float(mean[1]), "mlm": float(mean[2])}


def finetune_epoch(model: Recformer, data: RecformerData, examples, item_matrix: torch.Tensor, cfg: FinetuneConfig,
                   optimizer, generator: torch.Generator, speed: Speed) -> float:
    """One pass of the softmax over the item matrix (warm items only as candidates)."""
    device = next(model.parameters()).device
    model.train()
    candidates = torch.from_numpy(~data.held_out).to(device)
    candidates[:FIRST_ITEM_ID] = False
    rows, ends = examples
    total, steps = 0.0, 0
    for pick in _batches(len(rows), cfg.batch_size, cfg.steps_per_epoch, generator):
        started = time.perf_counter()
        values, offsets, targets = gather_prefixes(data.train.values, data.train.offsets, rows[pick], ends[pick],
                                                   model.cfg.max_items)
        seq_np = _pack(model, data.tokens, values, offsets)
        seq = model.represent(to_tensors(seq_np, device))
        loss = finetune_loss(model.scores(seq, item_matrix), torch.from_numpy(targets).to(device), candidates)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total, steps = total + loss.item(), steps + 1
        speed.tokens += real_tokens(seq_np)
        speed.seconds += time.perf_counter() - started
    return total / max(steps, 1)


# ---------------------------------------------------------------------------- the run

def _ndcg(model, data, matrix, cfg: RecformerConfig) -> float:
    return rank_metrics(evaluate_rows(model, data.tokens, data.valid, matrix, cfg.eval_batch_size,
                                      cfg.eval_exclude_seen))["ndcg@10"]


def run_stage(model: Recformer, data: RecformerData, examples, cfg: RecformerConfig, stage: int, items_mode: str,
              start_matrix: torch.Tensor | None, speeds: dict, log: list) -> tuple[Recformer, torch.Tensor, float]:
    """One fine-tuning stage; (its best model, its best item matrix, its best valid NDCG@10).
    Stage 1 re-encodes I each epoch; stage 2 keeps `start_matrix`."""
    ft = cfg.finetune
    epochs = ft.stage1_epochs if stage == 1 else ft.stage2_epochs
    generator = torch.Generator().manual_seed(cfg.seed + stage)
    trainable = items_mode == "trainable"
    matrix = start_matrix
    best = (copy.deepcopy(model.state_dict()), None, -1.0)
    optimizer = None
    bad = 0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        encode_seconds = 0.0
        if stage == 1 or matrix is None:
            t = time.perf_counter()
            matrix = encode_items(model, data.tokens, cfg.encode_batch_size, speeds["encode"])
            encode_seconds = time.perf_counter() - t
        item_param = torch.nn.Parameter(matrix.clone()) if trainable else None
        if optimizer is None or trainable:  # a trainable I is new each epoch: so is its optimizer
            params = list(model.parameters()) + ([item_param] if trainable else [])
            optimizer = _optimizer(params, ft.lr, cfg.weight_decay)
        used = item_param if trainable else matrix.detach()
        loss = finetune_epoch(model, data, examples, used, ft, optimizer, generator, speeds["finetune"])
        if trainable:
            matrix = item_param.detach()
        ndcg = _ndcg(model, data, matrix, cfg)
        seconds = time.perf_counter() - started
        log.append({"stage": stage, "epoch": epoch, "loss": loss, "valid_ndcg@10": ndcg, "seconds": seconds,
                    "encode_seconds": encode_seconds})
        if ndcg > best[2]:
            best, bad = (copy.deepcopy(model.state_dict()), matrix.clone(), ndcg), 0
        else:
            bad += 1
            if bad >= ft.patience:
                break
    model.load_state_dict(best[0])
    return model, best[1], best[2]


def finetune(model: Recformer, data: RecformerData, examples, cfg: RecformerConfig, matrix: torch.Tensor,
             valid: float, speeds: dict, log: list, say=print) -> tuple[Recformer, torch.Tensor, float]:
    """The variant's stages from the pretrained `model` (its item matrix `matrix`, its valid
    NDCG@10 `valid`); (the chosen model, its item matrix, its valid NDCG@10)."""
    stage1_items, stage2_items = VARIANTS[cfg.finetune.variant]
    if stage1_items is not None and cfg.finetune.stage1_epochs:
        model, matrix, valid = run_stage(model, data, examples, cfg, 1, stage1_items, None, speeds, log)
        say(f"stage 1: best valid ndcg@10 {valid:.4f}")
    if stage2_items is not None and cfg.finetune.stage2_epochs:
        stage1_state = copy.deepcopy(model.state_dict())
        model, matrix2, valid2 = run_stage(model, data, examples, cfg, 2, stage2_items, matrix, speeds, log)
        say(f"stage 2: best valid ndcg@10 {valid2:.4f}")
        if valid2 > valid:  # stage 2 replaces what came before only when it validates better
            matrix, valid = matrix2, valid2
        else:
            model.load_state_dict(stage1_state)
    return model, matrix, valid


def new_speeds() -> dict[str, Speed]:
    return {"pretrain": Speed(), "finetune": Speed(), "encode": Speed()}


def train_recformer(cfg: RecformerConfig, progress: bool = True) -> dict:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.output_dir)
    data = prepare(cfg, out)
    device = resolve_device(cfg.device)
    model_cfg = RecformerModelConfig(**{**asdict(cfg.model), "vocab_size": data.tokenizer.get_vocab_size()})
    model = build_recformer(model_cfg).to(device)
    examples = prefix_examples(data.train.values, data.train.offsets)
    if not len(examples[0]):
        raise ValueError("no training examples: every training sequence lost its items to the held-out share")
    speeds = new_speeds()
    log: list[dict] = []
    say = print if progress else (lambda *a, **k: None)
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.pretrain.epochs:
        optimizer = _optimizer(model.parameters(), cfg.pretrain.lr, cfg.weight_decay)
        for epoch in range(1, cfg.pretrain.epochs + 1):
            t = time.perf_counter()
            losses = pretrain_epoch(model, data, examples, cfg.pretrain, optimizer, generator, speeds["pretrain"])
            log.append({"stage": 0, "epoch": epoch, **losses, "seconds": time.perf_counter() - t})
            say(f"pretrain epoch {epoch}: loss {losses['loss']:.4f} (iic {losses['iic']:.4f}, mlm {losses['mlm']:.4f})")
        save_recformer(model, out / "pretrained")
    matrix = encode_items(model, data.tokens, cfg.encode_batch_size, speeds["encode"])
    zero_shot = split_metrics(evaluate_rows(model, data.tokens, data.test, matrix, cfg.eval_batch_size,
                                            cfg.eval_exclude_seen),
                              data.test, data.held_out)
    zero_shot_valid = _ndcg(model, data, matrix, cfg)
    say(f"zero-shot: valid ndcg@10 {zero_shot_valid:.4f}, test cold ndcg@10 {zero_shot['cold']['ndcg@10']:.4f}")
    model, matrix, best_valid = finetune(model, data, examples, cfg, matrix, zero_shot_valid, speeds, log, say)
    test = split_metrics(evaluate_rows(model, data.tokens, data.test, matrix, cfg.eval_batch_size,
                                            cfg.eval_exclude_seen),
                         data.test, data.held_out)
    save_recformer(model, out)
    np.save(out / ITEM_MATRIX_FILE, matrix.cpu().numpy())
    stage1 = [e for e in log if e["stage"] == 1]
    epoch_seconds = sum(e["seconds"] for e in stage1)
    result = {
        "config": asdict(cfg), "num_items": data.num_items, "held_out_items": int(data.held_out.sum()),
        "train_sequences": len(data.train), "train_examples": int(len(examples[0])),
        "valid_rows": len(data.valid), "test_rows": len(data.test),
        "zero_shot": zero_shot, "zero_shot_valid_ndcg@10": zero_shot_valid, "valid_ndcg@10": best_valid,
        "test": test, "log": log,
        "pretrain_tokens_per_s": speeds["pretrain"].per_second,
        "finetune_tokens_per_s": speeds["finetune"].per_second,
        "encode_items_per_s": speeds["encode"].per_second,
        "reencode_share": (sum(e["encode_seconds"] for e in stage1) / epoch_seconds) if epoch_seconds else None,
        "seconds": time.perf_counter() - started,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def load_trained(folder: str | Path) -> tuple[Recformer, ItemTokens, torch.Tensor]:
    """A trained run's model, item tokens and item matrix."""
    folder = Path(folder)
    return (load_recformer(folder), ItemTokens.load(folder),
            torch.from_numpy(np.load(folder / ITEM_MATRIX_FILE)))
