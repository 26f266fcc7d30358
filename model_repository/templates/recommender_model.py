"""Triton python-backend model: encoded session -> top-k ORIGINAL item ids and scores, through
seqrec's recommend() (the same function offline evaluation uses)."""
import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.recommend import recommend


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        self.k = int(config["parameters"]["top_k"]["string_value"])
        self.exclude_seen = config["parameters"]["exclude_seen"]["string_value"] == "true"
        self.model = load_checkpoint(here / "checkpoint")
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.model.to(f"cuda:{args['model_instance_device_id']}")
        self.vocabulary = np.load(here / "item_vocabulary.npy")  # encoded id -> original id

    def execute(self, requests):
        histories = [pb_utils.get_input_tensor_by_name(r, "encoded_items").as_numpy().reshape(-1) for r in requests]
        top, scores = recommend(self.model, histories, k=self.k, exclude_seen=self.exclude_seen)
        responses = []
        for ids, vals in zip(self.vocabulary[top], scores):
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("top_item_ids", ids.astype(np.int64)),
                        pb_utils.Tensor("top_scores", vals.astype(np.float32)),
                    ]
                )
            )
        return responses
