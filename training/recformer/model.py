"""Recformer: a Longformer over item text. A sequence is [CLS] + the texts of its items, most recent
first; each token's input is the sum of four embeddings (token, token position, token type
CLS/key/value, item position) layer-normalised. The [CLS] state is the representation (of a
sequence, or of an item encoded alone); a score is cosine similarity / temperature.

The Hugging Face `LongformerModel` supplies the layers (local attention window, global attention on
[CLS]); its own embedding module is replaced by a pass-through, since Recformer's four embeddings
are computed here. Batches arrive padded to a multiple of the window (batching.pack), so the
Longformer never pads (and never calls its embeddings) itself.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.config import derived
from seqrec.preprocessing.token_pack import NUM_TOKEN_TYPES, PAD_TOKEN

CONFIG_FILE, WEIGHTS_FILE = "recformer.json", "model.pt"
ITEM_MATRIX_FILE = "item_matrix.npy"  # [num encoded ids, d]: every item encoded alone


@dataclass
class RecformerModelConfig:
    vocab_size: int = derived("the tokenizer trained on the item texts", default=0)
    d_model: int = 256  # Recformer-mini: 6 layers x 256
    n_layers: int = 6
    n_heads: int = 8
    d_ff: int = 1024
    attention_window: int = 64  # tokens each side sees in all (HF: even); batches pad to a multiple
    max_tokens: int = 512  # a sequence's token budget, [CLS] included; the oldest items are cut
    max_items: int = 50  # items of a history read at most (the most recent ones)
    dropout: float = 0.1
    temperature: float = 0.05  # score = cosine / temperature (pretraining and fine-tuning)
    # the representation: the [CLS] state (the paper), or the mean of the other real tokens'
    # states (trained from scratch on a small budget, [CLS] starts out nearly the same for every
    # input: its own embedding dominates its state until attention has learnt to gather)
    pooling: Literal["cls", "mean"] = "cls"
    # a local folder: a Recformer checkpoint (recformer.json + model.pt, e.g. from pretraining), or
    # a Hugging Face Longformer folder (save_pretrained) whose layers load; nothing is downloaded
    pretrained: str | None = None

    def __post_init__(self):
        if self.attention_window < 2 or self.attention_window % 2:
            raise ValueError(f"attention_window {self.attention_window}: must be an even number >= 2")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens {self.max_tokens}: a sequence needs [CLS] and a token")
        if self.temperature <= 0:
            raise ValueError(f"temperature {self.temperature} must be > 0")

    def longformer(self):
        from transformers import LongformerConfig

        return LongformerConfig(
            vocab_size=max(self.vocab_size, 1), hidden_size=self.d_model, num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads, intermediate_size=self.d_ff,
            attention_window=[self.attention_window] * self.n_layers,
            max_position_embeddings=self.max_tokens + 2, hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout, pad_token_id=PAD_TOKEN, type_vocab_size=1)


class RecformerEmbeddings(nn.Module):
    """token + token position + token type + item position, summed, LayerNorm, dropout."""

    def __init__(self, cfg: RecformerModelConfig):
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD_TOKEN)
        self.token_position = nn.Embedding(cfg.max_tokens, cfg.d_model)
        self.token_type = nn.Embedding(NUM_TOKEN_TYPES, cfg.d_model)
        self.item_position = nn.Embedding(cfg.max_items + 1, cfg.d_model)  # 0: [CLS]
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        # The structural embeddings start at zero: summed at unit scale they would make every
        # item's input nearly the same (the few token types do not average out over an item's
        # tokens), so a model trained from scratch starts with item representations of cosine
        # ~0.96 to each other and its contrastive loss stalls at the uniform value. From zero, a
        # representation starts as a bag of its words, and position and type are learnt as needed.
        for table in (self.token_position, self.token_type, self.item_position):
            nn.init.zeros_(table.weight)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = (self.token(batch["input_ids"]) + self.token_position(batch["token_positions"])
             + self.token_type(batch["token_types"]) + self.item_position(batch["item_positions"]))
        return self.dropout(self.norm(x))


class _PassThrough(nn.Module):
    """Stands in for LongformerEmbeddings: the inputs arrive embedded already."""

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        return inputs_embeds


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> vocabulary logits (decoder tied to the token embedding)."""

    def __init__(self, cfg: RecformerModelConfig, token: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.token = token
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), self.token.weight, self.bias)


class Recformer(nn.Module):
    def __init__(self, cfg: RecformerModelConfig):
        super().__init__()
        from transformers import LongformerModel

        if cfg.vocab_size < 6:
            raise ValueError(f"vocab_size {cfg.vocab_size}: train the tokenizer first")
        self.cfg = cfg
        self.embeddings = RecformerEmbeddings(cfg)
        self.encoder = LongformerModel(cfg.longformer(), add_pooling_layer=False)
        self.encoder.embeddings = _PassThrough()
        self.mlm_head = MLMHead(cfg, self.embeddings.token)

    def hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, L, d] token states; L must be a multiple of the attention window."""
        if batch["input_ids"].shape[1] % self.cfg.attention_window:
            raise ValueError(f"batch length {batch['input_ids'].shape[1]} is not a multiple of the "
                             f"attention window {self.cfg.attention_window} (pack() pads to one)")
        mask = batch["attention_mask"]
        global_mask = torch.zeros_like(mask)
        global_mask[:, 0] = 1  # [CLS] attends to, and is attended by, every token
        out = self.encoder(inputs_embeds=self.embeddings(batch), attention_mask=mask,
                           global_attention_mask=global_mask)
        return out.last_hidden_state

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, d]: a sequence's representation, or an item's when encoded alone (see pool)."""
        return self.pool(self.hidden(batch), batch["attention_mask"])

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, d] states -> [B, d]: the [CLS] state, or the mean over the real non-[CLS] tokens."""
        if self.cfg.pooling == "cls":
            return hidden[:, 0]
        weights = mask.to(hidden.dtype).clone()
        weights[:, 0] = 0
        return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)

    def scores(self, sequences: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, d] x [N, d] -> [B, N] cosine similarity / temperature."""
        return F.normalize(sequences, dim=-1) @ F.normalize(items, dim=-1).T / self.cfg.temperature


def save_recformer(model: Recformer, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(model.cfg), indent=2))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".pt.tmp")  # never a half-written model.pt
    os.close(fd)
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, folder / WEIGHTS_FILE)


def load_recformer(folder: str | Path, **overrides) -> Recformer:
    """A saved Recformer; `overrides` replace config values that do not change the weights' shapes
    (dropout, temperature)."""
    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: not a Recformer checkpoint")
    saved = json.loads((folder / CONFIG_FILE).read_text())
    cfg = RecformerModelConfig(**{**saved, **overrides, "pretrained": None})
    model = Recformer(cfg)
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model


def build_recformer(cfg: RecformerModelConfig) -> Recformer:
    """A new model, or one initialised from `cfg.pretrained` (a local folder, never downloaded)."""
    if not cfg.pretrained:
        return Recformer(cfg)
    folder = Path(cfg.pretrained)
    if (folder / CONFIG_FILE).is_file():
        model = load_recformer(folder, dropout=cfg.dropout, temperature=cfg.temperature)
        if model.cfg.vocab_size != cfg.vocab_size:
            raise ValueError(f"pretrained {folder}: vocabulary of {model.cfg.vocab_size} tokens, "
                             f"the tokenizer has {cfg.vocab_size}: use the tokenizer saved with it")
        model.cfg.pretrained = cfg.pretrained
        return model
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.pretrained: {folder} is neither a Recformer checkpoint "
                                f"({CONFIG_FILE}) nor a Hugging Face Longformer folder (config.json)")
    from transformers import LongformerModel

    hf = LongformerModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False)
    hcfg = hf.config
    if (hcfg.hidden_size, hcfg.num_hidden_layers) != (cfg.d_model, cfg.n_layers):
        raise ValueError(f"pretrained {folder}: {hcfg.num_hidden_layers} layers x {hcfg.hidden_size}, "
                         f"the config asks for {cfg.n_layers} x {cfg.d_model}")
    model = Recformer(cfg)
    model.encoder.encoder.load_state_dict(hf.encoder.state_dict())
    if hcfg.vocab_size == cfg.vocab_size:  # the folder's tokenizer was used: its words carry over
        model.embeddings.token.weight.data.copy_(hf.embeddings.word_embeddings.weight.data)
    return model
