"""The two members of one export are one unit: an ensemble wired to the lookup step of one export
and the model step of another (different vocabularies) gets a clear INTERNAL error naming both
export fingerprints for every request, never an answer; the ensemble of one export still answers."""
from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from seqrec.client import RecommenderClient
from seqrec.client import contract as C
from seqrec.client.grpc_client import build_inputs
from seqrec.model_repository import contract
from seqrec.model_repository.export import ExportConfig, export_repository
from seqrec.model_repository.publish import read_config
from seqrec.model_repository.server import TritonServer
from seqrec.preprocessing.workflow import item_vocabulary, load_workflow

pytestmark = pytest.mark.slow
MIXED = "mixed"


@pytest.fixture(scope="module")
def other_vocabulary(tmp_path_factory, ml100k):
    """ETL + a tiny model on the interactions without a third of the items: another vocabulary."""
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl
    from seqrec.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("other")
    items = ml100k["item_id"].unique()
    subset = ml100k[~ml100k["item_id"].isin(items[::3])]
    etl = run_etl(ETLConfig(output_dir=str(root / "data"), max_len=20), interactions=subset)
    model = train(TrainConfig(data_dir=etl.output_dir, output_dir=str(root / "model"), epochs=1,
                              model={"d_model": 16, "n_heads": 2, "n_layers": 1}), progress=False)
    return etl, model


def _fingerprint(repo: Path, member: str, version: int) -> str:
    return (repo / member / str(version) / C.FINGERPRINT_FILE).read_text().strip()


def test_mismatched_members_answer_an_error_naming_both_exports(tmp_path, etl, trained,
                                                                  other_vocabulary):
    repo = tmp_path / "repo"
    export_repository(ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir,
                                   repository=str(repo)))
    etl2, model2 = other_vocabulary
    export_repository(ExportConfig(data_dir=etl2.output_dir, model_dir=model2.output_dir,
                                   repository=str(repo)))
    v1 = item_vocabulary(load_workflow(Path(etl.output_dir) / "workflow"))
    v2 = item_vocabulary(load_workflow(Path(etl2.output_dir) / "workflow"))
    assert len(v1) != len(v2)
    fp1, fp2 = _fingerprint(repo, C.PREPROCESS, 1), _fingerprint(repo, C.PREPROCESS, 2)
    assert fp1 != fp2 and len(fp1) == 16
    assert (fp1, fp2) == (_fingerprint(repo, C.MODEL, 1), _fingerprint(repo, C.MODEL, 2))
    # Both versions of each member stay loaded (publish keeps the previous one): wire the
    # lookup step of export 2 to the model step of export 1, as a failed reload could.
    steps = [(s.model_name, s.model_version) for s in read_config(repo / C.ENSEMBLE).ensemble_scheduling.step]
    assert steps == [(C.PREPROCESS, 2), (C.MODEL, 2)]
    mixed = contract.ensemble(MIXED, C.ENSEMBLE_INPUTS, C.ENSEMBLE_OUTPUTS,
                              [(C.PREPROCESS, C.ENSEMBLE_INPUTS, C.STEP_TENSORS + (C.ROW_ERRORS,)),
                               (C.MODEL, C.STEP_TENSORS, C.MODEL_OUTPUTS)], max_batch_size=64)
    config = text_format.Parse(mixed, mc.ModelConfig())
    config.ensemble_scheduling.step[0].model_version = 2
    config.ensemble_scheduling.step[1].model_version = 1
    (repo / MIXED / "1").mkdir(parents=True)
    (repo / MIXED / "config.pbtxt").write_text(text_format.MessageToString(config))

    known = [int(i) for i in v1[3:] if i in set(v2[3:].tolist())][:40]
    sessions = [known[i:i + 5] for i in range(0, 40, 5)]
    with TritonServer(repo) as server:
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        for session in sessions:  # one row per request, then one request of all rows
            for rows in ([session], sessions):
                with pytest.raises(InferenceServerException) as raised:
                    raw.infer(MIXED, build_inputs(rows))
                message = raised.value.message()
                assert raised.value.status() == "StatusCode.INTERNAL", message
                assert "export mismatch" in message and fp1 in message and fp2 in message, message
        raw.close()
        with RecommenderClient(server.grpc_url, timeout_s=60) as client:  # one export: answers
            answers = client.recommend_batch(sessions)
        assert all(len(a.item_ids) == 10 and set(a.item_ids) <= set(v2.tolist()) for a in answers)
