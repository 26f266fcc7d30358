# GPU deployment: NVIDIA's Triton image (24.10 = tritonserver 2.51, the same release as the
# pip-bundled CPU server), seqrec installed, the MovieLens-100k demo model exported with KIND_GPU.
#   docker build -t seqrec-triton .
#   docker run --gpus all --rm -p 8001:8001 seqrec-triton
FROM nvcr.io/nvidia/tritonserver:24.10-py3

WORKDIR /opt/seqrec
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY seqrec/ seqrec/
COPY preprocessing/ preprocessing/
COPY training/ training/
COPY model_repository/ model_repository/
COPY client/ client/
COPY configs/ configs/

# torch first and pinned (the image's CUDA driver runs the default CUDA wheel); then the verified
# Merlin pins. nvidia-pytriton is not needed: this image has its own tritonserver.
RUN python3 -m pip install --no-cache-dir 'pip<26.3' \
 && python3 -m pip install --no-cache-dir torch==2.13.0 \
 && grep -v -e nvidia-pytriton -e hadolint scripts/requirements.txt > /tmp/requirements.txt \
 && python3 -m pip install --no-cache-dir -c scripts/constraints.txt -r /tmp/requirements.txt \
 && python3 -m pip install --no-cache-dir --no-deps recbole==1.2.1 \
 && python3 -m pip install --no-cache-dir --no-deps .

# Build the demo model at image build time: ETL, training (CPU is enough, ~1 min), GPU export.
RUN seqrec preprocess --config configs/ml-100k.yaml \
 && seqrec train --config configs/ml-100k.yaml \
 && seqrec export --config configs/ml-100k.yaml --gpu --repository /models

EXPOSE 8000 8001 8002
HEALTHCHECK --interval=30s --timeout=5s CMD ["curl", "-fs", "localhost:8000/v2/health/ready"]
CMD ["tritonserver", "--model-repository=/models"]
