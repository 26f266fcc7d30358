"""Export the one scorer (training/scoring.py) as a `torch.export` program (scorer.pt2), so the
served model step needs torch only: no training code, no NVTabular.

The program is `Scorer(model, exclude_seen)` itself: whole encoded histories [B, T], encoded
exclusions [B, E], a [k, 0] depth tensor, the stacked side tensors for a model trained with side
features (else None) and a [W, 0] width tensor (W = the window width the batch needs, at most the
scorer's `keep`: short batches run a short window) in, top-k ids and scores out. It is written only after it gave the
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
from seqrec.training.scoring import Scorer, depth_tensor, scorer_inputs, width_tensor

from .safe_program import CompiledProgram

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
    """The same ranking (ids where the score is finite) and every score output to 1e-5."""
    finite = torch.isfinite(want[1])
    return bool(torch.equal(got[0][finite], want[0][finite])
                and all(torch.equal(torch.isfinite(g), torch.isfinite(w))
                        and torch.allclose(g[torch.isfinite(w)], w[torch.isfinite(w)], atol=1e-5, rtol=0)
                        for g, w in zip(got[1:], want[1:])))


def export_scorer(model, histories: Sequence[np.ndarray], folder: Path, exclude_seen: bool,
                  k: int = 20, features: dict | None = None, compile: bool = False,
                  module: torch.nn.Module | None = None) -> str | None:
    """Write folder/scorer.pt2 (and with `compile` folder/scorer_compiled.pt2) when it reproduces
    the eager scorer; return why not otherwise. histories: real encoded histories as the served
    step gets them (whole, not cut to the model's max_len); features: side features aligned with
    them (models trained with them). module: what to export instead of the plain scorer, with the
    scorer's signature (the two-stage module, training/ranker/two_stage.py; it ranks at most its
    `candidates`)."""
    model.eval()
    keep = [i for i, h in enumerate(histories) if len(h)]
    histories = [np.asarray(histories[i], dtype=np.int64) for i in keep]
    if features is not None:
        features = {c: [np.asarray(v[i]) for i in keep] for c, v in features.items()}
    if len(histories) < 4:
        return f"only {len(histories)} non-empty histories to check the exported program against (need 4)"
    most = getattr(module, "candidates", model.cfg.num_items)  # the deepest answer the module gives
    k = min(k, most)
    scorer = (Scorer(model, exclude_seen) if module is None else module).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=1, max=MAX_ITEM_IDS_PER_ROW)
    width = torch.export.Dim("excluded", min=1, max=MAX_EXCLUDED_PER_ROW)
    depth = torch.export.Dim("depth", min=1, max=most)
    window = torch.export.Dim("window", min=1, max=scorer.keep)
    items, excl, side = _check_inputs(model, histories, features, 4)
    shapes = {"items": {0: batch, 1: length}, "exclude": {0: batch, 1: width}, "depth": {0: depth},
              "side": None if side is None else {key: {0: batch, 1: length} for key in side},
              "width": {0: window}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export's notes on HF internals
            program = torch.export.export(scorer, (items, excl, depth_tensor(3), side,
                                                    width_tensor(items, scorer.keep)),
                                          dynamic_shapes=shapes)
    except Exception as err:  # noqa: BLE001 - reported to the caller, who decides
        return f"torch.export failed: {type(err).__name__}: {str(err)[:300]}"
    # all histories (the window as wide as the longest), then the shortest ones alone (a short window)
    short = np.argsort([len(h) for h in histories], kind="stable")[:8]
    checks = [_check_inputs(model, histories, features, len(histories)),
              _check_inputs(model, [histories[i] for i in short],
                            None if features is None else {c: [v[i] for i in short]
                                                           for c, v in features.items()}, len(short))]
    # = recommend() / two_stage_recommend()
    eager = Scorer(model, exclude_seen).eval() if module is None else module
    with torch.no_grad():
        wants = [eager(i, e, depth_tensor(k), s) for i, e, s in checks]
        for (i, e, s), want in zip(checks, wants):
            if not _same(program.module()(i, e, depth_tensor(k), s, width_tensor(i, scorer.keep)), want):
                return "the exported program does not reproduce recommend() on real histories"
    torch.export.save(program, str(Path(folder) / SCORER_FILE))
    if compile:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # freezing: the weights become constants, so the linear layers take prepacked
                # weights with the bias fused (a small model's GEMMs are its step's main cost)
                path = torch._inductor.aoti_compile_and_package(
                    program, package_path=str(Path(folder) / COMPILED_FILE),
                    inductor_configs={"freezing": True})
                compiled = CompiledProgram(path)  # as the model step calls it
                with torch.no_grad():
                    same = all(_same(compiled(i, e, depth_tensor(k), s, width_tensor(i, scorer.keep)), want)
                               for (i, e, s), want in zip(checks, wants))
        except Exception as err:  # noqa: BLE001 - reported to the caller, who decides
            return f"AOTInductor could not compile the program: {type(err).__name__}: {str(err)[:300]}"
        if not same:
            return "the compiled program does not reproduce recommend() on real histories"
    return None
