"""The export fingerprint names what both members of an export must agree on: the item lookup,
the side lookup, the vocabulary and the model's files; the same inputs give the same one."""
from __future__ import annotations

import numpy as np

from seqrec.model_repository.export import export_fingerprint
from seqrec.model_repository.lookup import ItemLookup
from seqrec.model_repository.side_lookup import SideLookup

VOCAB = np.array([-1, -1, -1, 50, 172, 7], dtype=np.int64)


def _side(codes):
    spec = {"inputs": [["genre", "INT64"]], "categorical": [{"column": "genre", "source": "genre"}],
            "continuous": []}
    return SideLookup(spec, {"cat0_keys": np.array([1, 2, 3]), "cat0_codes": np.array(codes)})


def test_every_part_of_an_export_changes_its_fingerprint(tmp_path):
    model = tmp_path / "checkpoint"
    model.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    lookup = ItemLookup.from_vocabulary(VOCAB, 20)
    base = export_fingerprint(lookup, _side([3, 4, 5]), VOCAB, model)
    assert len(base) == 16 and int(base, 16) >= 0
    assert export_fingerprint(ItemLookup.from_vocabulary(VOCAB, 20), _side([3, 4, 5]), VOCAB.copy(), model) == base
    other_vocab = np.array([-1, -1, -1, 50, 172, 8], dtype=np.int64)
    changed = [export_fingerprint(ItemLookup.from_vocabulary(other_vocab, 20), _side([3, 4, 5]), other_vocab, model),
               export_fingerprint(ItemLookup.from_vocabulary(VOCAB, 30), _side([3, 4, 5]), VOCAB, model),
               export_fingerprint(lookup, _side([3, 5, 4]), VOCAB, model),  # the side lookup
               export_fingerprint(lookup, None, VOCAB, model)]
    (model / "model.pt").write_bytes(b"other weights")
    changed.append(export_fingerprint(lookup, _side([3, 4, 5]), VOCAB, model))
    assert base not in changed and len(set(changed)) == len(changed)
