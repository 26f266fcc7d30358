"""Export the one scorer (training/scoring.py) as a `torch.export` program (scorer.pt2), so the
served model step needs torch only: no training code, no NVTabular.

The program is `Scorer(model, exclude_seen)` itself (its window always max_len wide): whole encoded histories [B, T], encoded
exclusions [B, E] and a [k, 0] depth tensor in (plus the stacked side tensors for a model
trained with side features), top-k ids and scores out. It is written only after it gave the
same answers (ids equal, scores to 1e-5) as the eager module on real held-out histories, with
exclusions; when it cannot be built the export fails naming why (or, with
`export.allow_fallback`, the model step runs the eager module from the installed training code,
and the export says so).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from seqrec.client.contract import MAX_EXCLUDED_PER_ROW, MAX_ITEM_IDS_PER_ROW
from seqrec.training.scoring import Scorer, depth_tensor, scorer_inputs

SCORER_FILE = "scorer.pt2"
# The same program compiled ahead of time by AOTInductor (C++ kernels, no Python per operator):
# what makes a small model's step cheap on CPU. Built with the C++ compiler at export time for
# this CPU and this torch; torch alone loads it.
COMPILED_FILE = "scorer_compiled.pt2"


def _check_inputs(model, histories, features, n: int):
    """The first n histories, each with its first three items excluded (exercises `exclude`)."""
    rows = histories[:n]
    part = None if features is None else {c: v[:n] for c, v in features.items()}
    exclude = [h[:3] for h in rows]
    return scorer_inputs(model, rows, part, exclude)


def _same(got, want) -> bool:
    """The same ranking (ids where the score is finite) and scores to 1e-5."""
    finite = torch.isfinite(want[1])
    return bool(torch.equal(got[0][finite], want[0][finite])
                and torch.equal(torch.isfinite(got[1]), finite)
                and torch.allclose(got[1][finite], want[1][finite], atol=1e-5, rtol=0))


def export_scorer(model, histories: Sequence[np.ndarray], folder: Path, exclude_seen: bool,
                  k: int = 20, features: dict | None = None, compile: bool = False) -> str | None:
    """Write folder/scorer.pt2 (and with `compile` folder/scorer_compiled.pt2) when it reproduces
    the eager scorer; return why not otherwise. histories: real encoded histories as the served
    step gets them (whole, not cut to the model's max_len); features: side features aligned with
    them (models trained with them)."""
    model.eval()
    keep = [i for i, h in enumerate(histories) if len(h)]
    histories = [np.asarray(histories[i], dtype=np.int64) for i in keep]
    if features is not None:
        features = {c: [np.asarray(v[i]) for i in keep] for c, v in features.items()}
    if len(histories) < 4:
        return f"only {len(histories)} non-empty histories to check the exported program against (need 4)"
    k = min(k, model.cfg.num_items)
    scorer = Scorer(model, exclude_seen, fixed_width=True).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=1, max=MAX_ITEM_IDS_PER_ROW)
    width = torch.export.Dim("excluded", min=1, max=MAX_EXCLUDED_PER_ROW)
    depth = torch.export.Dim("depth", min=1, max=model.cfg.num_items)
    items, excl, side = _check_inputs(model, histories, features, 4)
    shapes = {"items": {0: batch, 1: length}, "exclude": {0: batch, 1: width}, "depth": {0: depth},
              "side": None if side is None else {key: {0: batch, 1: length} for key in side}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export's notes on HF internals
            program = torch.export.export(scorer, (items, excl, depth_tensor(3), side),
                                          dynamic_shapes=shapes)
    except Exception as err:  # noqa: BLE001 - reported to the caller, who decides
        return f"torch.export failed: {type(err).__name__}: {str(err)[:300]}"
    items, excl, side = _check_inputs(model, histories, features, len(histories))
    with torch.no_grad():
        got = program.module()(items, excl, depth_tensor(k), side)
        want = Scorer(model, exclude_seen).eval()(items, excl, depth_tensor(k), side)  # = recommend()
    if not _same(got, want):
        return "the exported program does not reproduce recommend() on real histories"
    torch.export.save(program, str(Path(folder) / SCORER_FILE))
    if compile:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = torch._inductor.aoti_compile_and_package(
                    program, package_path=str(Path(folder) / COMPILED_FILE))
                with torch.no_grad():
                    got = torch._inductor.aoti_load_package(path)(items, excl, depth_tensor(k), side)
        except Exception as err:  # noqa: BLE001 - reported to the caller, who decides
            return f"AOTInductor could not compile the program: {type(err).__name__}: {str(err)[:300]}"
        if not _same(got, want):
            return "the compiled program does not reproduce recommend() on real histories"
    return None
