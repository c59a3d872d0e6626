#!/usr/bin/env bash
# Cloud Scheduler job that launches the beamlens Flex Template every night (no VM of our own):
# it POSTs to the Dataflow flexTemplates.launch endpoint with an OAuth token of SERVICE_ACCOUNT.
# Publishing the searcher afterwards: an Airflow task (deploy/airflow) or a Cloud Function on the
# LATEST object's finalize event running deploy/schedule/publish_searcher.sh's two copies.
#
#   PROJECT=p REGION=us-central1 BUCKET=b SERVICE_ACCOUNT=sa@p.iam.gserviceaccount.com \
#   MODEL=gs://b/models/vision_encoder.keras INPUT_GLOB='gs://b/photos/*.jpg' \
#   TEXT_EMBEDDER=gs://b/models/text_embedder.tflite deploy/schedule/cloud_scheduler.sh
set -euo pipefail
: "${PROJECT:?}" "${BUCKET:?}" "${SERVICE_ACCOUNT:?}" "${MODEL:?}"
REGION="${REGION:-us-central1}"
TAG="${TAG:-latest}"
SCHEDULE="${SCHEDULE:-15 2 * * *}"
ROOT="${ROOT:-gs://$BUCKET/beamlens/index}"
TEMPLATE="gs://${BUCKET}/beamlens/templates/reindex-${TAG}.json"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/beamlens/reindex:${TAG}"
DRY_RUN="${DRY_RUN:-0}"

corpus="\"input_glob\": \"${INPUT_GLOB:-}\""
if [ -z "${INPUT_GLOB:-}" ]; then corpus="\"captions\": \"${CAPTIONS:?set CAPTIONS or INPUT_GLOB}\", \"images\": \"${IMAGES:-}\""; fi
body=$(cat <<JSON
{
  "launchParameter": {
    "jobName": "beamlens-reindex-scheduled",
    "containerSpecGcsPath": "${TEMPLATE}",
    "parameters": {
      "output_root": "${ROOT}",
      "model": "${MODEL}",
      "text_embedder": "${TEXT_EMBEDDER:-}",
      ${corpus},
      "sdk_container_image": "${IMAGE}"
    },
    "environment": {"tempLocation": "gs://${BUCKET}/tmp", "maxWorkers": ${MAX_WORKERS:-50}}
  }
}
JSON
)
echo "$body" | python3 -m json.tool > /dev/null  # refuse to schedule malformed JSON

cmd=(gcloud scheduler jobs create http beamlens-nightly-reindex
     --project "$PROJECT" --location "$REGION" --schedule "$SCHEDULE" --time-zone UTC
     --uri "https://dataflow.googleapis.com/v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch"
     --http-method POST --headers Content-Type=application/json
     --oauth-service-account-email "$SERVICE_ACCOUNT"
     --oauth-token-scope https://www.googleapis.com/auth/cloud-platform
     --message-body "$body")
echo "+ ${cmd[*]}" >&2
if [ "$DRY_RUN" != 1 ]; then "${cmd[@]}"; fi
