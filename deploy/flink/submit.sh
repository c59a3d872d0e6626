#!/usr/bin/env bash
# Submit `beamlens reindex` to an EXISTING Flink cluster through Beam's portable Flink runner.
#
#   FLINK_MASTER=flink-jobmanager:8081 ROOT=/mnt/shared/index CAPTIONS=... IMAGES=... \
#   MODEL=... TEXT_EMBEDDER=... deploy/flink/submit.sh
#
# Two ways in (MODE):
#   MODE=flink    (default) --runner=FlinkRunner --flink_master=HOST:PORT: the Python SDK starts
#                 Beam's Flink job server itself (it fetches the job-server jar from Maven once,
#                 or give FLINK_JOB_SERVER_JAR=/path/beam-runners-flink-1.19-job-server-2.77.0.jar).
#   MODE=portable --runner=PortableRunner --job_endpoint=HOST:8099 against a job server you run,
#                 e.g. `docker run --net=host apache/beam_flink1.19_job_server:2.77.0 --flink-master=HOST:8081`.
# ENVIRONMENT=DOCKER (default) runs the Python SDK harness as a container on each Task Manager
# (SDK_IMAGE: build deploy/dataflow/Dockerfile; it has beamlens + TensorFlow); ENVIRONMENT=EXTERNAL
# uses worker-pool sidecars (`docker run ... SDK_IMAGE --worker_pool`) at localhost:50000.
# Files: ROOT, images and models must be readable by the Task Managers AND this machine
# (a shared mount, gs:// with GCS credentials, or hdfs://).
set -euo pipefail

MODE="${MODE:-flink}"
FLINK_MASTER="${FLINK_MASTER:-localhost:8081}"
JOB_ENDPOINT="${JOB_ENDPOINT:-localhost:8099}"
FLINK_VERSION="${FLINK_VERSION:-1.19}"
PARALLELISM="${PARALLELISM:-8}"
ENVIRONMENT="${ENVIRONMENT:-DOCKER}"
SDK_IMAGE="${SDK_IMAGE:-apache/beam_python3.11_sdk:2.77.0}"
BEAMLENS="${BEAMLENS:-beamlens}"
DRY_RUN="${DRY_RUN:-0}"
: "${ROOT:?set ROOT (the output root)}" "${MODEL:?set MODEL (.keras)}"

corpus=()
if [ -n "${INPUT_GLOB:-}" ]; then
  corpus=(--input-glob "$INPUT_GLOB")
else
  : "${CAPTIONS:?set CAPTIONS (or INPUT_GLOB)}"
  corpus=(--captions "$CAPTIONS")
  if [ -n "${IMAGES:-}" ]; then corpus+=(--images "$IMAGES"); fi
fi
searcher=()
if [ -n "${TEXT_EMBEDDER:-}" ]; then searcher+=(--text-embedder "$TEXT_EMBEDDER"); fi
if [ -n "${IMAGE_EMBEDDER:-}" ]; then searcher+=(--image-embedder "$IMAGE_EMBEDDER"); fi
if [ ${#searcher[@]} -eq 0 ]; then searcher=(--no-searcher); fi

env_flags=(--environment_type="$ENVIRONMENT")
case "$ENVIRONMENT" in
  DOCKER) env_flags+=(--environment_config="$SDK_IMAGE") ;;
  EXTERNAL) env_flags+=(--environment_config="${WORKER_POOL:-localhost:50000}") ;;
  LOOPBACK|PROCESS) ;;
  *) echo "ENVIRONMENT must be DOCKER, EXTERNAL, PROCESS or LOOPBACK" >&2; exit 2 ;;
esac

case "$MODE" in
  flink)
    runner=(--runner=FlinkRunner --flink_master="$FLINK_MASTER" --flink_version="$FLINK_VERSION" --parallelism="$PARALLELISM")
    if [ -n "${FLINK_JOB_SERVER_JAR:-}" ]; then runner+=(--flink_job_server_jar="$FLINK_JOB_SERVER_JAR"); fi
    ;;
  portable) runner=(--runner=PortableRunner --job_endpoint="$JOB_ENDPOINT") ;;
  *) echo "MODE must be flink or portable" >&2; exit 2 ;;
esac

cmd=("$BEAMLENS" reindex --output-root "$ROOT" "${corpus[@]}" --model "$MODEL" "${searcher[@]}"
     --num-shards "${NUM_SHARDS:-32}" "${runner[@]}" "${env_flags[@]}")
echo "+ ${cmd[*]}" >&2
if [ "$DRY_RUN" != 1 ]; then exec "${cmd[@]}"; fi
