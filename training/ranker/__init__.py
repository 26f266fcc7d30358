"""A discriminative ranker (history + candidate -> click logit) initialised from a generatively
pretrained transformer (GPSD's strategies); see docs/ranker.md."""
