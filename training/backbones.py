"""Hugging Face backbones built from configs (nothing is downloaded), and the attention each supports.

seqrec owns the item embeddings and feeds `inputs_embeds`, so every HF word-embedding table is
built with a vocabulary of 2 (unused). Attention kinds:
  causal         a position sees itself and the past (GPT-2, Llama; XLNet through perm_mask)
  bidirectional  a position sees the whole (unpadded) sequence (BERT family, Longformer, XLNet)
  permutation    XLNet's two-stream attention with perm_mask + target_mapping (PLM)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertModel,
    BertConfig,
    BertModel,
    ElectraConfig,
    ElectraModel,
    GPT2Config,
    GPT2Model,
    LlamaConfig,
    LlamaModel,
    LongformerConfig,
    LongformerModel,
    RobertaConfig,
    RobertaModel,
    XLNetConfig,
    XLNetModel,
)
from transformers.activations import NewGELUActivation

from .dropout import FastDropout

if TYPE_CHECKING:
    from .model import ModelConfig

CAUSAL, BIDIRECTIONAL, PERMUTATION = "causal", "bidirectional", "permutation"


def _bert_like(cfg: "ModelConfig", config_cls, **extra) -> dict:
    return dict(
        vocab_size=2,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=4 * cfg.d_model,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        # RoBERTa/Longformer number positions from pad_token_id + 1: leave room for that offset.
        max_position_embeddings=cfg.max_len + 2,
        pad_token_id=0,
        type_vocab_size=1,
        bos_token_id=None,  # no special tokens: seqrec feeds item embeddings
        eos_token_id=None,
        sep_token_id=None,
        **extra,
    )


def _gpt2(cfg):
    return GPT2Config(vocab_size=2, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                      n_head=cfg.n_heads, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                      attn_pdrop=cfg.dropout, bos_token_id=None, eos_token_id=None)


def _llama(cfg):
    # Llama-style decoder: RoPE positions (no learned position table), RMSNorm, SwiGLU MLP.
    return LlamaConfig(vocab_size=2, hidden_size=cfg.d_model, intermediate_size=4 * cfg.d_model,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=cfg.n_heads, max_position_embeddings=cfg.max_len,
                       attention_dropout=cfg.dropout, pad_token_id=0, bos_token_id=None,
                       eos_token_id=None)


def _xlnet(cfg):
    return XLNetConfig(vocab_size=2, d_model=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                       d_inner=4 * cfg.d_model, dropout=cfg.dropout, pad_token_id=0,
                       bos_token_id=None, eos_token_id=None)


def _longformer(cfg):
    # The sliding window must be even; a window covering the whole sequence is plain full
    # attention, so it is capped by the (even) sequence length.
    window = min(cfg.attention_window, cfg.max_len + cfg.max_len % 2)
    window += window % 2
    return LongformerConfig(**_bert_like(cfg, LongformerConfig, attention_window=[window] * cfg.n_layers))


# name -> (HF config builder, HF model class, attention kinds it supports)
BACKBONES: dict[str, tuple] = {
    "gpt2": (_gpt2, GPT2Model, (CAUSAL,)),
    "llama": (_llama, LlamaModel, (CAUSAL,)),
    "xlnet": (_xlnet, XLNetModel, (CAUSAL, BIDIRECTIONAL, PERMUTATION)),
    "bert": (lambda c: BertConfig(**_bert_like(c, BertConfig)), BertModel, (BIDIRECTIONAL,)),
    "roberta": (lambda c: RobertaConfig(**_bert_like(c, RobertaConfig)), RobertaModel, (BIDIRECTIONAL,)),
    "albert": (lambda c: AlbertConfig(**_bert_like(c, AlbertConfig, embedding_size=c.d_model)),
               AlbertModel, (BIDIRECTIONAL,)),
    "electra": (lambda c: ElectraConfig(**_bert_like(c, ElectraConfig, embedding_size=c.d_model)),
                ElectraModel, (BIDIRECTIONAL,)),
    "longformer": (_longformer, LongformerModel, (BIDIRECTIONAL,)),
}


def attentions(name: str) -> tuple[str, ...]:
    return BACKBONES[name][2]


def hf_config(cfg: "ModelConfig", n_layers: int | None = None):
    """The HF config seqrec builds for `cfg` (with `hf_overrides`; `n_layers` for a smaller copy)."""
    make_config = BACKBONES[cfg.backbone][0]
    hf = make_config(cfg)
    for key, value in (cfg.hf_overrides or {}).items():
        setattr(hf, key, value)
    if n_layers is not None:  # a smaller copy (the RTD generator)
        for key in ("n_layer", "num_hidden_layers"):
            if hasattr(hf, key):
                setattr(hf, key, n_layers)
        if hasattr(hf, "attention_window") and isinstance(hf.attention_window, list):
            hf.attention_window = hf.attention_window[:n_layers]
    return hf


def build_backbone(cfg: "ModelConfig", n_layers: int | None = None) -> nn.Module:
    """A randomly initialised HF model from the config; `hf_overrides` reach the HF config, and
    `pretrained` (a local folder, never downloaded) loads weights with from_pretrained instead."""
    if cfg.pretrained and n_layers is None:
        return fast_modules(load_pretrained(cfg))
    return fast_modules(BACKBONES[cfg.backbone][1](hf_config(cfg, n_layers)))


class TanhGELU(nn.Module):
    """The tanh GELU (GPT-2's "gelu_new"), 0.5 x (1 + tanh z), z = sqrt(2/pi) (x + 0.044715 x^3).
    Training: torch's fused kernel, forward and backward in one pass each. Evaluation: the same
    function written x * sigmoid(2z), which Inductor vectorises through exp, faster than its
    tanh in the compiled served scorer. Eager scoring and the exported program run this same form,
    so served and offline answers stay equal; the two forms agree to ~5e-7."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.gelu(x, approximate="tanh")
        return x * torch.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))


def fast_modules(model: nn.Module) -> nn.Module:
    """Swapped in place, same HF config and no parameters involved:
    - GPT-2's default activation ("gelu_new"), the tanh GELU written as five Python-level ops
      (each a pass over the MLP's activations, forward and backward) -> TanhGELU, the same
      function (equal to ~1e-6);
    - every nn.Dropout -> FastDropout of the same p (training/dropout.py: a cheaper CPU mask)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, TanhGELU())
            elif type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p))
    return model


# Attributes that say where/how a config was saved, not what the network computes.
_PROVENANCE = {"architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
               "_commit_hash", "_attn_implementation_autoset"}


def load_pretrained(cfg: "ModelConfig") -> nn.Module:
    """`from_pretrained` on a local folder (`local_files_only`: nothing is downloaded). The saved
    HF config must equal the one seqrec builds from `cfg`: a checkpoint stores only `cfg`, so
    load_checkpoint and the served model rebuild the backbone from it without the folder."""
    folder = Path(cfg.pretrained)
    model_cls = BACKBONES[cfg.backbone][1]
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.pretrained: {folder} is not a local Hugging Face model "
                                f"folder (no config.json; save one with save_pretrained)")
    saved_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if saved_type != model_cls.config_class.model_type:
        raise ValueError(f"model.pretrained: {folder} holds a {saved_type!r} model, but model.backbone "
                         f"is {cfg.backbone!r} ({model_cls.config_class.model_type!r})")
    saved = model_cls.config_class.from_pretrained(folder, local_files_only=True).to_dict()
    wanted = hf_config(cfg).to_dict()
    differ = {k: (saved.get(k), wanted.get(k)) for k in sorted((set(saved) | set(wanted)) - _PROVENANCE)
              if saved.get(k) != wanted.get(k)}
    if differ:
        shown = ", ".join(f"{k}: saved {a!r} vs config {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"model.pretrained: {folder} does not match the model config ({shown}); set "
                         f"d_model / n_layers / n_heads / dropout / max_len to match, or the other "
                         f"attributes in model.hf_overrides")
    return model_cls.from_pretrained(folder, local_files_only=True)


def run_backbone(
    backbone: nn.Module,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    attention: str,
    perm_mask: torch.Tensor | None = None,
    target_mapping: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, T, d] embeddings -> hidden states: [B, T, d], or [B, P, d] with a target_mapping.
    position_ids [B, T]: the absolute positions of a learned position table (default 0..T-1);
    XLNet's positions are relative and take none."""
    if isinstance(backbone, XLNetModel):
        if attention == CAUSAL:
            # perm_mask[b, i, j] = 1: position i may not see position j. Causal: j > i is hidden.
            t = embeds.shape[1]
            perm_mask = torch.ones(t, t, device=embeds.device).triu(1).expand(len(embeds), t, t)
        out = backbone(inputs_embeds=embeds, attention_mask=attention_mask.float(),
                       perm_mask=perm_mask, target_mapping=target_mapping, use_mems=False)
        return out.last_hidden_state
    if attention == PERMUTATION or target_mapping is not None:
        raise ValueError("permutation attention needs the xlnet backbone")
    extra = {} if position_ids is None else {"position_ids": position_ids}
    return backbone(inputs_embeds=embeds, attention_mask=attention_mask, **extra).last_hidden_state
