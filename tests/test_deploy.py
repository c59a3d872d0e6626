"""deploy/: every deployment's options parse and build the real pipeline graph, without any service.

Dataflow, Flink, the portable runner and Dask are checked by parsing the exact flags the
deploy material uses (deploy/runner_options.py, the scripts' dry runs, the Airflow DAG's bash
command) with Beam's own PipelineOptions, then constructing the reindex and embed graphs with
that runner configured (no ``run()``). Shell scripts must pass ``bash -n``; JSON must load; the
Airflow DAG is executed against a small recording stand-in for Airflow (Airflow is not installed).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from tests.conftest import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner_options = _load(DEPLOY / "runner_options.py", "beamlens_deploy_runner_options")
CORPUS = ["--input-glob", "/data/photos/*.jpg", "--model", "/models/vision_encoder.keras",
          "--output-root", "/data/index", "--text-embedder", "/models/text.tflite", "--num-shards", "16"]


def _offline(flags: list[str]) -> list[str]:
    """Beam's own dry-run flag: the Dataflow options validator then skips its GCS bucket probe."""
    return flags + ["--dry_run=True"] if "--runner=DataflowRunner" in flags else flags


def _graph_labels(pipeline: beam.Pipeline) -> set[str]:
    proto = pipeline.to_runner_api()
    return {t.unique_name for t in proto.components.transforms.values()}


def _reindex_graph(flags: list[str]) -> tuple[PipelineOptions, set[str]]:
    """Parse flags like the CLI does and build the reindex graph for that runner (not run)."""
    from beamlens.pipelines.options import EmbedOptions, ReindexOptions  # noqa: PLC0415
    from beamlens.transforms.read_images import ImageSource  # noqa: PLC0415
    from beamlens.transforms.reindex import ReindexGraph, build_pipeline  # noqa: PLC0415

    options = PipelineOptions(_offline(flags))
    embed = options.view_as(EmbedOptions)
    opts = options.view_as(ReindexOptions)
    source = ImageSource(captions_file=embed.captions, image_root=embed.images, input_glob=embed.input_glob)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, ReindexGraph(
        source=source, previous_shards=["/data/index/v-1/shards/embeddings-00000-of-00001.tfrecord"], model=embed.model,
        fingerprint="sha256:0123456789abcdef", image_size=224, shards_dir=f"{opts.output_root}/v-x/shards",
        plan_dir=f"{opts.output_root}/v-x/plan", num_shards=embed.num_shards, max_batch_size=embed.max_batch_size, buckets=8))
    return options, _graph_labels(pipeline)


def _embed_graph(flags: list[str]) -> set[str]:
    from beamlens.pipelines import options as cli_options  # noqa: PLC0415 (registers EmbedOptions)
    from beamlens.transforms.embed_job import EmbedRequest, build_pipeline  # noqa: PLC0415

    options = PipelineOptions(_offline(flags) + ["--output", "/data/embeddings"])
    assert cli_options.EmbedOptions  # the flags below are its
    request = EmbedRequest.from_options(options)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, request.source(), request, 224, "sha256:0123456789abcdef")
    return _graph_labels(pipeline)


def _assert_reindex_graph(labels: set[str]) -> None:
    for expected in ("Join", "Classify", "ReadShards", "Batch/GroupBuckets", "Embed/RunInference", "WritePlan", "Write/WriteShards"):
        assert any(label == expected or label.startswith(expected + "/") for label in labels), expected


@pytest.mark.parametrize("gpu", [False, True])
def test_dataflow_options_build_both_graphs(gpu):
    flags = runner_options.dataflow_options("my-project", "europe-west4", "my-bucket",
                                            image="europe-west4-docker.pkg.dev/p/beamlens/reindex:1", gpu=gpu)
    options, labels = _reindex_graph(CORPUS + flags)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == ("my-project", "europe-west4", "gs://my-bucket/tmp")
    worker = options.view_as(WorkerOptions)
    assert worker.sdk_container_image == "europe-west4-docker.pkg.dev/p/beamlens/reindex:1"
    assert worker.max_num_workers == 50 and worker.autoscaling_algorithm == "THROUGHPUT_BASED"
    services = cloud.dataflow_service_options or []
    if gpu:
        assert services == ["worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"]
        assert worker.machine_type == "n1-standard-8"
        assert "no_use_multiple_sdk_containers" in options.view_as(beam.options.pipeline_options.DebugOptions).experiments
    else:
        assert services == [] and worker.machine_type is None
    from beamlens.transforms.inference import accelerator_requested  # noqa: PLC0415

    assert accelerator_requested(options) == gpu  # GPU workers: --engine auto runs the .keras on the GPU
    _assert_reindex_graph(labels)
    assert "Embed/RunInference" in " ".join(_embed_graph(CORPUS[:4] + flags))


def test_dataflow_setup_file_packaging_points_at_the_repository_setup_py():
    # Bucket names must be valid (>= 3 characters): Beam's validator otherwise tries to create a
    # default bucket on GCS (measured), which is also how a typo would show up on a real launch.
    flags = runner_options.dataflow_options("my-project", "us-central1", "my-bucket", setup_file=str(PROJECT_ROOT / "setup.py"))
    options, labels = _reindex_graph(CORPUS + flags)
    assert options.view_as(SetupOptions).setup_file == str(PROJECT_ROOT / "setup.py")
    assert options.view_as(WorkerOptions).sdk_container_image is None
    assert options.view_as(GoogleCloudOptions).staging_location == "gs://my-bucket/staging"
    _assert_reindex_graph(labels)


@pytest.mark.parametrize("environment", ["DOCKER", "EXTERNAL"])
def test_flink_runner_options_build_the_graph(environment):
    flags = runner_options.flink_options("flink-jobmanager:8081", parallelism=16, environment=environment)
    options, labels = _reindex_graph(CORPUS + flags)
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    everything = options.get_all_options()
    assert everything["flink_master"] == "flink-jobmanager:8081"
    assert everything["parallelism"] == 16 and everything["flink_version"] == "1.19"
    portable = options.view_as(PortableOptions)
    assert portable.environment_type == environment
    assert portable.environment_config == ("apache/beam_python3.11_sdk:2.77.0" if environment == "DOCKER" else "localhost:50000")
    _assert_reindex_graph(labels)
    # The graph translates to the portable representation Flink's job server receives.
    from apache_beam.runners.portability.flink_runner import FlinkRunner  # noqa: PLC0415

    assert isinstance(beam.Pipeline(options=options).runner, FlinkRunner)


def test_portable_and_dask_options_build_the_graph():
    import apache_beam.runners.dask.dask_runner  # noqa: F401, PLC0415 (registers --dask_client_address)

    options, labels = _reindex_graph(CORPUS + runner_options.portable_options("jobserver:8099"))
    assert options.view_as(PortableOptions).job_endpoint == "jobserver:8099"
    _assert_reindex_graph(labels)
    options, labels = _reindex_graph(CORPUS + runner_options.dask_options("tcp://dask:8786"))
    assert options.get_all_options()["address"] == "tcp://dask:8786"  # DaskOptions' dest name
    _assert_reindex_graph(labels)


def test_runner_options_cli_prints_parseable_flags():
    done = subprocess.run([sys.executable, str(DEPLOY / "runner_options.py"), "dataflow", "--project", "p", "--bucket", "b", "--gpu"],
                          capture_output=True, text=True, check=True)
    options = PipelineOptions(shlex.split(done.stdout))
    assert options.view_as(GoogleCloudOptions).dataflow_service_options[0].startswith("worker_accelerator=type:nvidia-tesla-t4")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_shell_scripts_pass_bash_n(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"


def test_flex_template_metadata_parameters_are_real_pipeline_options():
    from beamlens.pipelines import reindex  # noqa: PLC0415

    metadata = json.loads((DEPLOY / "dataflow" / "metadata.json").read_text())
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names)) and {"model", "output_root", "input_glob", "text_embedder"} <= set(names)
    known = set(PipelineOptions([]).view_as(reindex.ReindexOptions).get_all_options(drop_default=False)) | {"command"}
    assert set(names) <= known, sorted(set(names) - known)
    required = [p["name"] for p in metadata["parameters"] if not p.get("isOptional")]
    assert required == ["model"]


def test_flex_template_dockerfile_and_entry_point():
    dockerfile = (DEPLOY / "dataflow" / "Dockerfile").read_text()
    assert dockerfile.splitlines()[[i for i, l in enumerate(dockerfile.splitlines()) if l.startswith("FROM")][0]] == \
        "FROM apache/beam_python3.11_sdk:2.77.0"
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/deploy/dataflow/flex_main.py" in dockerfile
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE=${WORKDIR}/setup.py" in dockerfile
    assert "--no-deps tflite-support==0.4.4" in dockerfile
    assert "COPY beamlens ./beamlens" in dockerfile  # the namespace root (public API) beside the source folders
    flex = _load(DEPLOY / "dataflow" / "flex_main.py", "beamlens_flex_main")
    assert flex.split_command(["--command=embed", "--output=gs://b/o"]) == ("embed", ["--output=gs://b/o"])
    assert flex.split_command(["--model", "m.keras"]) == ("reindex", ["--model", "m.keras"])
    with pytest.raises(SystemExit, match="reindex or embed"):
        flex.split_command(["--command", "train"])


def _dry(script: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(["bash", str(DEPLOY / script), *args], env={**os.environ, "DRY_RUN": "1", **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_launch_script_dry_run_builds_and_runs_the_template():
    out = _dry("dataflow/launch.sh", {"PROJECT": "p", "BUCKET": "b", "GPU": "1", "MODEL": "gs://b/m.keras",
                                      "INPUT_GLOB": "gs://b/x/*.jpg", "TEXT_EMBEDDER": "gs://b/t.tflite"}, "build", "run")
    lines = [l[2:] for l in out.splitlines() if l.startswith("+ ")]
    assert lines[0].startswith("docker build -f") and "--build-arg TF_EXTRA=and-cuda" in lines[0]
    assert lines[2].startswith("gcloud dataflow flex-template build gs://b/beamlens/templates/reindex-latest.json")
    run = shlex.split(lines[3])
    assert run[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    params = run[run.index("--parameters") + 1]
    assert params.startswith("^~^")
    values = dict(item.split("=", 1) for item in params[3:].split("~"))
    assert values["model"] == "gs://b/m.keras" and values["input_glob"] == "gs://b/x/*.jpg"
    assert values["dataflow_service_options"] == "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"


def test_flink_submit_dry_run_flags_parse_and_build_the_graph():
    out = _dry("flink/submit.sh", {"ROOT": "gs://bucket/index", "MODEL": "gs://bucket/models/vision_encoder.keras",
                                   "INPUT_GLOB": "gs://bucket/photos/*.jpg", "TEXT_EMBEDDER": "gs://bucket/t.tflite",
                                   "FLINK_MASTER": "jm:8081"})
    command = shlex.split(out.splitlines()[0][2:])
    assert command[:2] == ["beamlens", "reindex"]
    options, labels = _reindex_graph(command[2:])
    assert options.get_all_options()["flink_master"] == "jm:8081"
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    _assert_reindex_graph(labels)
    portable = _dry("flink/submit.sh", {"ROOT": "/r", "MODEL": "m.keras", "CAPTIONS": "c.json", "MODE": "portable",
                                        "ENVIRONMENT": "EXTERNAL", "JOB_ENDPOINT": "js:8099"})
    assert "--runner=PortableRunner --job_endpoint=js:8099" in portable and "--no-searcher" in portable


def test_cron_wrapper_and_publish_script(tmp_path):
    root, dest = tmp_path / "index", tmp_path / "published"
    version = "v-20261123-021500-abc123"
    (root / version / "searchers").mkdir(parents=True)
    (root / version / "searchers" / "text_searcher.tflite").write_bytes(b"model bytes")
    (root / "LATEST").write_text(version + "\n")
    env_file = tmp_path / "reindex.env"
    env_file.write_text(f"ROOT={root}\nINPUT_GLOB='/data/*.jpg'\nMODEL=/m/v.keras\nTEXT_EMBEDDER=/m/t.tflite\n"
                        f"PUBLISH_TO={dest}\nBEAM_ARGS='--runner=FnApiRunner'\n")
    out = _dry("schedule/run_reindex.sh", {"ENV_FILE": str(env_file), "LOCK": str(tmp_path / "lock")})
    assert f"+ beamlens reindex --output-root {root} --input-glob /data/*.jpg --model /m/v.keras" in out
    assert "--runner=FnApiRunner" in out
    # publishing for real (local folders): version folder first, pointer last
    done = subprocess.run(["bash", str(DEPLOY / "schedule" / "publish_searcher.sh"), str(root), str(dest)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (dest / "LATEST").read_text().strip() == version
    assert (dest / version / "text_searcher.tflite").read_bytes() == b"model bytes"
    (root / "LATEST").write_text("../../etc\n")
    bad = subprocess.run(["bash", str(DEPLOY / "schedule" / "publish_searcher.sh"), str(root), str(dest)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not a version name" in bad.stderr
    cron = [l for l in (DEPLOY / "schedule" / "crontab.example").read_text().splitlines() if l and not l.startswith("#") and "=" not in l.split()[0]]
    assert len(cron) == 1 and cron[0].split()[:5] == ["15", "2", "*", "*", "*"] and "run_reindex.sh" in cron[0]


def test_cloud_scheduler_dry_run_posts_a_valid_launch_body():
    out = _dry("schedule/cloud_scheduler.sh", {"PROJECT": "p", "BUCKET": "b", "SERVICE_ACCOUNT": "sa@p.iam",
                                               "MODEL": "gs://b/m.keras", "INPUT_GLOB": "gs://b/p/*.jpg"})
    body = json.loads(out[out.index("--message-body ") + len("--message-body "):])
    assert body["launchParameter"]["containerSpecGcsPath"] == "gs://b/beamlens/templates/reindex-latest.json"
    assert body["launchParameter"]["parameters"]["input_glob"] == "gs://b/p/*.jpg"
    assert "flexTemplates:launch" in out


class _Recorder:
    """Stands in for an Airflow operator: remembers its arguments and its downstream tasks."""

    created: list["_Recorder"] = []

    def __init__(self, task_id: str, **kwargs) -> None:
        self.task_id, self.kwargs, self.downstream = task_id, kwargs, []
        _Recorder.created.append(self)

    def __rshift__(self, other: "_Recorder") -> "_Recorder":
        self.downstream.append(other.task_id)
        return other


def _fake_airflow(monkeypatch, variables: dict[str, str]) -> dict:
    dags: dict = {}

    class DAG:
        def __init__(self, dag_id: str, **kwargs) -> None:
            dags[dag_id] = kwargs

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Variable:
        @staticmethod
        def get(key, default_var=None):
            return variables.get(key, default_var)

    modules = {
        "airflow": types.ModuleType("airflow"),
        "airflow.models": types.ModuleType("airflow.models"),
        "airflow.operators": types.ModuleType("airflow.operators"),
        "airflow.operators.bash": types.ModuleType("airflow.operators.bash"),
        "airflow.providers.google.cloud.operators.dataflow": types.ModuleType("dataflow"),
    }
    for name in ("airflow.providers", "airflow.providers.google", "airflow.providers.google.cloud", "airflow.providers.google.cloud.operators"):
        modules[name] = types.ModuleType(name)
    modules["airflow"].DAG = DAG
    modules["airflow.models"].Variable = Variable
    modules["airflow.operators.bash"].BashOperator = _Recorder
    modules["airflow.providers.google.cloud.operators.dataflow"].DataflowStartFlexTemplateOperator = _Recorder
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    _Recorder.created = []
    return dags


def test_airflow_dag_compiles_and_its_reindex_command_parses(monkeypatch):
    path = DEPLOY / "airflow" / "beamlens_reindex_dag.py"
    compile(path.read_text(), str(path), "exec")
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.module == "airflow.operators.bash" for n in ast.walk(tree))
    dags = _fake_airflow(monkeypatch, {"beamlens_bucket": "my-bucket", "beamlens_project": "my-project", "beamlens_use_gpu": "true"})
    _load(path, "beamlens_dag_bash")
    config = dags["beamlens_reindex"]
    assert config["max_active_runs"] == 1 and config["schedule"] == "15 2 * * *" and config["catchup"] is False
    reindex_task, publish_task = _Recorder.created
    assert (reindex_task.task_id, reindex_task.downstream, publish_task.task_id) == ("reindex", ["publish"], "publish")
    command = shlex.split(reindex_task.kwargs["bash_command"].replace("{{ ds_nodash }}", "20261123"))
    assert command[:2] == ["beamlens", "reindex"]
    options, labels = _reindex_graph(command[2:])
    assert options.view_as(GoogleCloudOptions).project == "my-project"
    assert options.view_as(GoogleCloudOptions).job_name == "beamlens-reindex-20261123"
    assert options.view_as(GoogleCloudOptions).dataflow_service_options[0].startswith("worker_accelerator=")
    _assert_reindex_graph(labels)
    assert publish_task.kwargs["bash_command"].endswith("gs://my-bucket/beamlens/index gs://my-bucket/beamlens/searchers")


def test_airflow_dag_flex_template_variant(monkeypatch):
    _fake_airflow(monkeypatch, {"beamlens_bucket": "bk", "beamlens_use_flex_template": "true"})
    _load(DEPLOY / "airflow" / "beamlens_reindex_dag.py", "beamlens_dag_flex")
    reindex_task = _Recorder.created[0]
    launch = reindex_task.kwargs["body"]["launchParameter"]
    assert reindex_task.kwargs["wait_until_finished"] is True
    assert launch["containerSpecGcsPath"] == "gs://bk/beamlens/templates/reindex-latest.json"
    metadata = {p["name"] for p in json.loads((DEPLOY / "dataflow" / "metadata.json").read_text())["parameters"]}
    assert set(launch["parameters"]) - {"sdk_container_image"} <= metadata
