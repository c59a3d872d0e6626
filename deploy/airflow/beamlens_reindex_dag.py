"""Airflow DAG: nightly ``beamlens reindex``, then publish the new searcher.

Two tasks in sequence:

1. ``reindex`` (BashOperator) runs ``beamlens reindex`` on the Airflow worker. With
   ``--runner=DataflowRunner`` the heavy part (hashing, RunInference on the new images, shard
   writing) runs on Dataflow; the worker waits for it, checks the counts from the shard
   writers' per-shard summaries (O(shards) bytes, never a record), builds the searcher and moves ``ROOT/LATEST`` (a crashed task leaves LATEST alone;
   the retry cleans up the partial version). The worker needs the beamlens package installed
   (``pip install beamlens`` from this repository, plus tflite-support with --no-deps).
2. ``publish`` (BashOperator) copies LATEST's searchers to the bucket the app downloads from
   (deploy/schedule/publish_searcher.sh: version folder first, pointer object last).

``USE_FLEX_TEMPLATE=True`` swaps task 1 for ``DataflowStartFlexTemplateOperator`` launching the
Flex Template of deploy/dataflow (no beamlens install on the Airflow worker; the launcher VM does
the post-processing); ``wait_until_finished`` keeps ``publish`` after the job.

Settings are Airflow Variables (``beamlens_*``) with the defaults below. ``max_active_runs=1``:
two re-indexes must never run on one root at once.
"""

from __future__ import annotations

import datetime as dt
import shlex

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

PROJECT = Variable.get("beamlens_project", default_var="my-project")
REGION = Variable.get("beamlens_region", default_var="us-central1")
BUCKET = Variable.get("beamlens_bucket", default_var="my-bucket")
ROOT = Variable.get("beamlens_root", default_var=f"gs://{BUCKET}/beamlens/index")
INPUT_GLOB = Variable.get("beamlens_input_glob", default_var=f"gs://{BUCKET}/photos/*.jpg")
MODEL = Variable.get("beamlens_model", default_var=f"gs://{BUCKET}/beamlens/models/vision_encoder.keras")
TEXT_EMBEDDER = Variable.get("beamlens_text_embedder", default_var=f"gs://{BUCKET}/beamlens/models/text_embedder.tflite")
IMAGE_EMBEDDER = Variable.get("beamlens_image_embedder", default_var=f"gs://{BUCKET}/beamlens/models/image_embedder.tflite")
PUBLISH_TO = Variable.get("beamlens_publish_to", default_var=f"gs://{BUCKET}/beamlens/searchers")
SDK_IMAGE = Variable.get("beamlens_sdk_image", default_var=f"{REGION}-docker.pkg.dev/{PROJECT}/beamlens/reindex:latest")
USE_GPU = Variable.get("beamlens_use_gpu", default_var="false").lower() == "true"
USE_FLEX_TEMPLATE = Variable.get("beamlens_use_flex_template", default_var="false").lower() == "true"
PUBLISH_SCRIPT = Variable.get("beamlens_publish_script", default_var="/opt/beamlens/deploy/schedule/publish_searcher.sh")

DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    f"--project={PROJECT}",
    f"--region={REGION}",
    f"--temp_location=gs://{BUCKET}/tmp",
    f"--staging_location=gs://{BUCKET}/staging",
    f"--sdk_container_image={SDK_IMAGE}",
    "--sdk_location=container",
    "--experiments=use_runner_v2",
    "--max_num_workers=50",
    "--job_name=beamlens-reindex-{{ ds_nodash }}",
]
if USE_GPU:
    DATAFLOW_ARGS += [
        "--dataflow_service_options=worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver",
        "--experiments=no_use_multiple_sdk_containers",
        "--machine_type=n1-standard-8",
    ]

REINDEX_ARGS = [
    "beamlens", "reindex",
    "--output-root", ROOT,
    "--input-glob", INPUT_GLOB,
    "--model", MODEL,
    "--text-embedder", TEXT_EMBEDDER,
    "--image-embedder", IMAGE_EMBEDDER,
    "--num-shards", "64",
    *DATAFLOW_ARGS,
]
REINDEX_COMMAND = " ".join(shlex.quote(a) if "{{" not in a else a for a in REINDEX_ARGS)
PUBLISH_COMMAND = f"{shlex.quote(PUBLISH_SCRIPT)} {shlex.quote(ROOT)} {shlex.quote(PUBLISH_TO)}"

default_args = {
    "owner": "beamlens",
    "retries": 1,
    "retry_delay": dt.timedelta(minutes=15),
    "execution_timeout": dt.timedelta(hours=12),
}

with DAG(
    dag_id="beamlens_reindex",
    description="Incremental re-index of the image corpus and publication of the TFLite searcher",
    schedule="15 2 * * *",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["beamlens", "dataflow"],
) as dag:
    if USE_FLEX_TEMPLATE:
        from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

        reindex = DataflowStartFlexTemplateOperator(
            task_id="reindex",
            project_id=PROJECT,
            location=REGION,
            wait_until_finished=True,
            body={
                "launchParameter": {
                    "jobName": "beamlens-reindex-{{ ds_nodash }}",
                    "containerSpecGcsPath": f"gs://{BUCKET}/beamlens/templates/reindex-latest.json",
                    "parameters": {
                        "output_root": ROOT,
                        "input_glob": INPUT_GLOB,
                        "model": MODEL,
                        "text_embedder": TEXT_EMBEDDER,
                        "image_embedder": IMAGE_EMBEDDER,
                        "sdk_container_image": SDK_IMAGE,
                    },
                    "environment": {"tempLocation": f"gs://{BUCKET}/tmp", "maxWorkers": 50},
                }
            },
        )
    else:
        reindex = BashOperator(task_id="reindex", bash_command=REINDEX_COMMAND,
                               env={"TF_CPP_MIN_LOG_LEVEL": "2"}, append_env=True)

    publish = BashOperator(task_id="publish", bash_command=PUBLISH_COMMAND)

    reindex >> publish
