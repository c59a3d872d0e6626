"""Beam option lists for each deployment target, in one place (used by the scripts' docs and the tests).

Each function returns plain ``--flag=value`` strings to append to ``beamlens reindex`` (or
``beamlens embed``). Nothing here contacts a service: the tests parse these lists with
``PipelineOptions`` and build the pipeline graph without running it.

Run as a script to print one target's flags, e.g.::

    python deploy/runner_options.py dataflow --project P --region us-central1 --bucket B --gpu
"""

from __future__ import annotations

import argparse
import sys

BEAM_SDK_IMAGE = "apache/beam_python3.11_sdk:2.77.0"
GPU_ACCELERATOR = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"


def dataflow_options(
    project: str,
    region: str,
    bucket: str,
    image: str | None = None,
    gpu: bool = False,
    max_workers: int = 50,
    machine_type: str | None = None,
    setup_file: str = "./setup.py",
) -> list[str]:
    """DataflowRunner: Runner v2, workers packaged by setup.py or a custom SDK container.

    ``image`` (the Flex Template image, which is built FROM the Beam SDK image with beamlens
    installed) replaces ``--setup_file``: workers then start without pip-installing TensorFlow.
    ``gpu`` asks for one T4 per worker with the driver installed; RunInference then runs the
    Keras model on the GPU if the image has a CUDA TensorFlow (see deploy/dataflow/Dockerfile).
    """
    flags = [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location=gs://{bucket}/tmp",
        f"--staging_location=gs://{bucket}/staging",
        f"--max_num_workers={max_workers}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        "--experiments=use_runner_v2",
    ]
    if image:
        flags += [f"--sdk_container_image={image}", "--sdk_location=container"]
    else:
        flags += [f"--setup_file={setup_file}"]
    if gpu:
        # One model copy per VM, one process: a GPU is shared badly by many SDK processes.
        flags += [
            f"--dataflow_service_options=worker_accelerator={GPU_ACCELERATOR}",
            "--experiments=no_use_multiple_sdk_containers",
            f"--machine_type={machine_type or 'n1-standard-8'}",
        ]
    elif machine_type:
        flags += [f"--machine_type={machine_type}"]
    return flags


def flink_options(flink_master: str, parallelism: int = 8, sdk_image: str = BEAM_SDK_IMAGE,
                  environment: str = "DOCKER", flink_version: str = "1.19") -> list[str]:
    """FlinkRunner against an existing Flink cluster (Beam starts its Flink job server for you).

    Beam 2.77 accepts --flink_version 1.19, 1.20, 2.0, 2.1, 2.2 (checked by its option parser).

    The job server jar comes from Maven on first use (``--flink_job_server_jar`` to give a local
    copy). ``environment=DOCKER`` runs the Python SDK harness in ``sdk_image`` on each Task
    Manager: use an image with beamlens installed; ``EXTERNAL`` points at worker-pool sidecars.
    """
    flags = [
        "--runner=FlinkRunner",
        f"--flink_master={flink_master}",
        f"--flink_version={flink_version}",
        f"--parallelism={parallelism}",
        f"--environment_type={environment}",
    ]
    if environment == "DOCKER":
        flags.append(f"--environment_config={sdk_image}")
    elif environment == "EXTERNAL":
        flags.append("--environment_config=localhost:50000")
    return flags


def portable_options(job_endpoint: str, environment: str = "DOCKER", sdk_image: str = BEAM_SDK_IMAGE) -> list[str]:
    """PortableRunner against a running job server (e.g. the Flink job-server container on :8099)."""
    flags = ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}", f"--environment_type={environment}"]
    if environment == "DOCKER":
        flags.append(f"--environment_config={sdk_image}")
    elif environment == "EXTERNAL":
        flags.append("--environment_config=localhost:50000")
    return flags


def dask_options(scheduler_address: str) -> list[str]:
    """DaskRunner on an existing dask.distributed cluster (see PLATFORM.md for its defects)."""
    return ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", f"--dask_client_address={scheduler_address}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print Beam flags for a deployment target")
    parser.add_argument("target", choices=["dataflow", "flink", "portable", "dask"])
    parser.add_argument("--project")
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--bucket")
    parser.add_argument("--image")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--max-workers", type=int, default=50)
    parser.add_argument("--flink-master", default="localhost:8081")
    parser.add_argument("--job-endpoint", default="localhost:8099")
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--scheduler", default="tcp://localhost:8786")
    args = parser.parse_args(argv)
    if args.target == "dataflow":
        if not (args.project and args.bucket):
            parser.error("dataflow needs --project and --bucket")
        flags = dataflow_options(args.project, args.region, args.bucket, args.image, args.gpu, args.max_workers)
    elif args.target == "flink":
        flags = flink_options(args.flink_master, args.parallelism)
    elif args.target == "portable":
        flags = portable_options(args.job_endpoint)
    else:
        flags = dask_options(args.scheduler)
    print(" ".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
