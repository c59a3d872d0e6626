#!/usr/bin/env bash
# Build the beamlens Flex Template (image + template spec) and/or run it.
#
#   deploy/dataflow/launch.sh build            # docker build + push, gcloud dataflow flex-template build
#   deploy/dataflow/launch.sh run              # gcloud dataflow flex-template run (a re-index)
#   GPU=1 deploy/dataflow/launch.sh build run  # CUDA TensorFlow image, T4 workers
#
# Settings come from the environment (defaults in brackets):
#   PROJECT, REGION [us-central1], BUCKET, REPO [beamlens], TAG [latest],
#   ROOT [gs://$BUCKET/beamlens/index], CAPTIONS / IMAGES or INPUT_GLOB, MODEL, TEXT_EMBEDDER,
#   IMAGE_EMBEDDER (optional), MAX_WORKERS [50], GPU [0], DRY_RUN [0: 1 prints the commands only]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

: "${PROJECT:?set PROJECT}" "${BUCKET:?set BUCKET}"
REGION="${REGION:-us-central1}"
REPO="${REPO:-beamlens}"
TAG="${TAG:-latest}"
GPU="${GPU:-0}"
MAX_WORKERS="${MAX_WORKERS:-50}"
ROOT="${ROOT:-gs://$BUCKET/beamlens/index}"
DRY_RUN="${DRY_RUN:-0}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPO}/reindex:${TAG}"
TEMPLATE="gs://${BUCKET}/beamlens/templates/reindex-${TAG}.json"

run() {
  echo "+ $*" >&2
  if [ "$DRY_RUN" != 1 ]; then "$@"; fi
}

build() {
  local extra=()
  if [ "$GPU" = 1 ]; then extra=(--build-arg TF_EXTRA=and-cuda); fi
  run docker build -f "$here/Dockerfile" "${extra[@]}" -t "$IMAGE" "$repo"
  run docker push "$IMAGE"
  run gcloud dataflow flex-template build "$TEMPLATE" \
    --project "$PROJECT" \
    --image "$IMAGE" \
    --sdk-language PYTHON \
    --metadata-file "$here/metadata.json"
}

launch() {
  : "${MODEL:?set MODEL (gs://.../vision_encoder.keras)}"
  local params="output_root=${ROOT},model=${MODEL}"
  if [ -n "${INPUT_GLOB:-}" ]; then
    params+=",input_glob=${INPUT_GLOB}"
  else
    : "${CAPTIONS:?set CAPTIONS (or INPUT_GLOB)}"
    params+=",captions=${CAPTIONS}"
    if [ -n "${IMAGES:-}" ]; then params+=",images=${IMAGES}"; fi
  fi
  if [ -n "${TEXT_EMBEDDER:-}" ]; then params+=",text_embedder=${TEXT_EMBEDDER}"; fi
  if [ -n "${IMAGE_EMBEDDER:-}" ]; then params+=",image_embedder=${IMAGE_EMBEDDER}"; fi
  # Workers use the template image itself as their SDK container (no per-VM pip install).
  params+=",sdk_container_image=${IMAGE},experiments=use_runner_v2"
  local extra=()
  if [ "$GPU" = 1 ]; then
    # One T4 per worker, driver installed; one SDK process per VM so the model is loaded once.
    params+=",dataflow_service_options=worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    extra=(--additional-experiments=no_use_multiple_sdk_containers --worker-machine-type=n1-standard-8)
  fi
  run gcloud dataflow flex-template run "beamlens-reindex-$(date -u +%Y%m%d-%H%M%S)" \
    --project "$PROJECT" \
    --region "$REGION" \
    --template-file-gcs-location "$TEMPLATE" \
    --temp-location "gs://${BUCKET}/tmp" \
    --staging-location "gs://${BUCKET}/staging" \
    --max-workers "$MAX_WORKERS" \
    --parameters "^~^${params//,/\~}" \
    "${extra[@]}"
}

if [ $# -eq 0 ]; then set -- build run; fi
for step in "$@"; do
  case "$step" in
    build) build ;;
    run) launch ;;
    *) echo "usage: $0 [build] [run]" >&2; exit 2 ;;
  esac
done
