#!/usr/bin/env bash
# One scheduled re-index + publish, safe to call from cron. `beamlens reindex` itself locks the root
# (ROOT/_LOCK, across hosts and on gs://; a second run exits 2 naming the holder); this host-local
# flock only makes an overrunning cron job skip quietly instead of failing.
#
# Configure with an env file (default /etc/beamlens/reindex.env), for example:
#   ROOT=/srv/beamlens/index            # or gs://bucket/beamlens/index
#   CAPTIONS=/srv/coco/annotations/captions_train2017.json
#   IMAGES=/srv/coco/train2017          # or INPUT_GLOB='gs://bucket/photos/*.jpg'
#   MODEL=/srv/models/vision_encoder.keras
#   TEXT_EMBEDDER=/srv/models/text_embedder.tflite
#   IMAGE_EMBEDDER=/srv/models/image_embedder.tflite
#   PUBLISH_TO=gs://bucket/beamlens/searchers
#   BEAM_ARGS="--runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address=tcp://dask:8786"
set -euo pipefail
ENV_FILE="${ENV_FILE:-/etc/beamlens/reindex.env}"
if [ -f "$ENV_FILE" ]; then set -a; . "$ENV_FILE"; set +a; fi
: "${ROOT:?}" "${MODEL:?}"
BEAMLENS="${BEAMLENS:-beamlens}"
LOCK="${LOCK:-/tmp/beamlens-reindex.lock}"
DRY_RUN="${DRY_RUN:-0}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

corpus=()
if [ -n "${INPUT_GLOB:-}" ]; then corpus=(--input-glob "$INPUT_GLOB"); else corpus=(--captions "${CAPTIONS:?}"); [ -n "${IMAGES:-}" ] && corpus+=(--images "$IMAGES"); fi
searcher=()
[ -n "${TEXT_EMBEDDER:-}" ] && searcher+=(--text-embedder "$TEXT_EMBEDDER")
[ -n "${IMAGE_EMBEDDER:-}" ] && searcher+=(--image-embedder "$IMAGE_EMBEDDER")
# shellcheck disable=SC2206  # BEAM_ARGS is a list of flags on purpose
beam_args=(${BEAM_ARGS:-})

exec 9>"$LOCK"
if ! flock -n 9; then
  echo "run_reindex: another re-index holds $LOCK; skipping this run" >&2
  exit 0
fi
cmd=("$BEAMLENS" reindex --output-root "$ROOT" "${corpus[@]}" --model "$MODEL" "${searcher[@]}" "${beam_args[@]}")
echo "+ ${cmd[*]}" >&2
if [ "$DRY_RUN" != 1 ]; then "${cmd[@]}"; fi
if [ -n "${PUBLISH_TO:-}" ]; then DRY_RUN="$DRY_RUN" "$here/publish_searcher.sh" "$ROOT" "$PUBLISH_TO"; fi
