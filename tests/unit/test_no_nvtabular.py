"""Training, scoring and the lookups import without NVTabular (the served model's fallback and a
plain torch install need no ETL stack)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("nvtabular", "merlin", "dask", "cudf"):
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
""")


def test_training_imports_without_nvtabular():
    code = BLOCK + textwrap.dedent("""
        import numpy as np
        import seqrec.training, seqrec.training.model, seqrec.training.recommend
        import seqrec.training.trainer, seqrec.training.incremental, seqrec.training.evaluation
        import seqrec.model_repository.lookup, seqrec.model_repository.side_lookup
        from seqrec.training.model import ModelConfig, SequenceRecommender
        from seqrec.training.recommend import recommend
        model = SequenceRecommender(ModelConfig(num_items=20, max_len=5, d_model=8, n_layers=1, n_heads=1))
        top, _ = recommend(model, [np.array([3, 4]), np.array([5])], k=3)
        assert top.shape == (2, 3)
        assert not any(m.split(".")[0] in ("nvtabular", "merlin") for m in sys.modules)
        print("imported")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("imported")


def test_the_block_really_blocks():
    out = subprocess.run([sys.executable, "-c", BLOCK + "import nvtabular"], capture_output=True, text=True)
    assert out.returncode != 0 and "blocked: nvtabular" in out.stderr
