"""The served tensor contract, declared once: every tensor of the `seqrec` ensemble and of the
step between its two models, with its data type, shape, whether a caller must send it, and what
it means; plus the request size limits.

Python standard library only: the client imports it, the exporter renders config.pbtxt from it
(model_repository/contract.py), the exporter copies it beside the Triton models (their runtime
reads names and limits from it), and docs/serving.md's tensor table is generated from it.
Shapes leave out the batch dimension (B sessions per request); -1 is a variable size.
"""
from __future__ import annotations

from dataclasses import dataclass

ENSEMBLE, PREPROCESS, MODEL = "seqrec", "seqrec_preprocess", "seqrec_model"

# Request size limits, checked by the preprocessing step (INVALID_ARGUMENT beyond them). Sessions
# longer than the workflow's max_len are truncated anyway; the excluded ids are encoded and
# scattered into the scores, so their cost is linear in their number.
MAX_ITEM_IDS_PER_ROW = 10_000
MAX_EXCLUDED_PER_ROW = 100_000


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton wire type: INT64, FP32, BOOL, BYTES
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable
    required: bool
    meaning: str


ITEM_IDS = Tensor("item_ids", "INT64", (-1,), True,
                  "original item ids, oldest first, right-padded "
                  f"(at most {MAX_ITEM_IDS_PER_ROW} per row)")
LENGTHS = Tensor("lengths", "INT64", (1,), False, "real length of each row (default: the padded width)")
K = Tensor("k", "INT64", (1,), False,
           "how many items, the same for every row, >= 1 (default: the exported top_k; above the "
           "catalogue: all of it)")
EXCLUDE_ITEM_IDS = Tensor("exclude_item_ids", "INT64", (-1,), False,
                          "original ids never to recommend; ids outside the catalogue are ignored "
                          f"(so serve as padding; at most {MAX_EXCLUDED_PER_ROW} per row)")
TOP_ITEM_IDS = Tensor("top_item_ids", "INT64", (-1,), True,
                      "original item ids, best first; -1 where exclusions left fewer than k "
                      "items, all -1 for a bad row")
TOP_SCORES = Tensor("top_scores", "FP32", (-1,), True,
                    "their scores; -inf where exclusions left fewer than k, all NaN for a bad row")
ROW_ERRORS = Tensor("row_errors", "BYTES", (1,), True,
                    '"" for an answered row, else the message naming the row\'s problem')

ENSEMBLE_INPUTS = (ITEM_IDS, LENGTHS, K, EXCLUDE_ITEM_IDS)
ENSEMBLE_OUTPUTS = (TOP_ITEM_IDS, TOP_SCORES, ROW_ERRORS)
# A model trained with side features adds one input per raw column, aligned with item_ids.
SIDE_INPUT_MEANING = ("raw value of each interaction, aligned with item_ids (required by a model "
                      "trained with side features; its metadata lists them)")
SIDE_INPUT_DTYPES = ("INT64", "FP32", "BYTES")

# Between the preprocessing step and the model step.
ENCODED_ITEMS = Tensor("encoded_items", "INT64", (-1,), True,
                       "encoded ids, 0-padded; a bad row all 0 (so not scored: no row_ok tensor to move)")
# One tensor for everything per row but the history (one tensor less to move between the steps
# than k and exclusions apart): [k, export fingerprint, encoded exclusions...].
STEP_ARGS = Tensor("step_args", "INT64", (-1,), True,
                   "per row: the checked k (0: the exported default), the lookup step's export "
                   "fingerprint, then the encoded exclusions (0: none; unknown ids -> 0)")
ARG_K, ARG_FINGERPRINT, ARG_EXCLUDE = 0, 1, 2  # STEP_ARGS columns; exclusions from ARG_EXCLUDE on
# Both members' version folders of one export hold this file (16 hex digits; a file, not a config
# parameter: one config serves the previous version too); the model step refuses step_args from
# a lookup step of another export (INTERNAL: a server-side fault).
FINGERPRINT_FILE = "export_fingerprint"
SIDE_CATEGORICAL = Tensor("side_categorical", "INT64", (-1, -1), True,
                          "[T, C] categorical codes aligned with encoded_items, model's column order")
SIDE_CONTINUOUS = Tensor("side_continuous", "FP32", (-1, -1), True,
                         "[T, F] continuous values aligned with encoded_items, model's column order")
STEP_TENSORS = (ENCODED_ITEMS, STEP_ARGS)
# A text model's (Recformer) lookup step also packs each history's cached item tokens, most
# recent item first (preprocessing/token_pack.py): one [B, L] tensor per packed array, L a
# multiple of the attention window. The model step reads them by these keys.
TEXT_KEYS = ("input_ids", "token_types", "token_positions", "item_positions", "attention_mask")
TEXT_PREFIX = "text_"
TEXT_STEP_TENSORS = tuple(Tensor(TEXT_PREFIX + key, "INT64", (-1,), True,
                                 f"packed history tokens: {key}, aligned across the text tensors")
                          for key in TEXT_KEYS)


def fingerprint_value(text: str) -> int:
    """A config's 16 hex digits -> the signed INT64 carried in step_args."""
    value = int(text, 16)
    if not 0 <= value < 1 << 64:
        raise ValueError(f"export fingerprint {text!r} is not 16 hex digits")
    return value - (1 << 64) if value >= 1 << 63 else value


def fingerprint_text(value: int) -> str:
    """The INT64 in step_args -> the 16 hex digits of the config (as messages show it)."""
    return f"{int(value) & ((1 << 64) - 1):016x}"
MODEL_OUTPUTS = (TOP_ITEM_IDS, TOP_SCORES)


def side_step_tensors(n_categorical: int, n_continuous: int) -> tuple[Tensor, ...]:
    """The side tensors between the steps for a model with that many columns of each kind."""
    out = []
    if n_categorical:
        out.append(Tensor(SIDE_CATEGORICAL.name, "INT64", (-1, n_categorical), True,
                          SIDE_CATEGORICAL.meaning))
    if n_continuous:
        out.append(Tensor(SIDE_CONTINUOUS.name, "FP32", (-1, n_continuous), True,
                          SIDE_CONTINUOUS.meaning))
    return tuple(out)


def side_input(name: str, dtype: str) -> Tensor:
    if dtype not in SIDE_INPUT_DTYPES:
        raise ValueError(f"side input {name!r}: data type {dtype!r} is not one of {SIDE_INPUT_DTYPES}")
    return Tensor(name, dtype, (-1,), True, SIDE_INPUT_MEANING)


def markdown_table() -> str:
    """The ensemble's tensors as the Markdown table in docs/serving.md."""
    def dims(t):
        return "[B, " + ", ".join("L" if d == -1 and t.name == ITEM_IDS.name else
                                  "k" if d == -1 and t in ENSEMBLE_OUTPUTS else
                                  "E" if d == -1 else str(d) for d in t.dims) + "]"

    lines = ["| direction | name | type | shape | required | meaning |",
             "|---|---|---|---|---|---|"]
    for direction, tensors in (("input", ENSEMBLE_INPUTS), ("output", ENSEMBLE_OUTPUTS)):
        for t in tensors:
            lines.append(f"| {direction} | `{t.name}` | {t.dtype} | {dims(t)} | "
                         f"{'yes' if t.required else 'no'} | {t.meaning} |")
    lines.append(f"| input | `<side column>` | {' / '.join(SIDE_INPUT_DTYPES)} | [B, L] | "
                 f"side-feature models | {SIDE_INPUT_MEANING} |")
    return "\n".join(lines) + "\n"
