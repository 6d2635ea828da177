"""The deployment files (docker/): no Docker engine or Kubernetes runs here, so they are parsed and their
invariants checked — versions pinned to what the project is tested with, a non-root image, GPUs reserved,
ports on localhost, health checks gating start-up, and entrypoints that are real tune-run command lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"


def dockerfile_args() -> dict[str, str]:
    text = (DOCKER / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def declared(pkg: str) -> Requirement:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, deps) if r.name == pkg)


@pytest.mark.parametrize(
    "pkg, arg",
    [
        ("torch", "TORCH_VERSION"),
        ("torchvision", "TORCHVISION_VERSION"),
        ("ray", "RAY_VERSION"),
        ("mlflow", "MLFLOW_VERSION"),
    ],
)
def test_the_image_pins_versions_the_project_accepts(pkg, arg):
    # Not "== installed": CI installs whatever pip resolves today, and a new release on PyPI must not turn
    # CI red; the pins are bumped by hand (README: Running on a cluster) and must satisfy pyproject.
    pinned = dockerfile_args()[arg]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), f"{arg}={pinned}: pin an exact release"
    assert declared(pkg).specifier.contains(pinned)


def test_the_image_runs_as_a_non_root_user_with_volumes_and_the_cluster_extra():
    text = (DOCKER / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^VOLUME .*/work/runs", text, re.M)
    assert '".[cluster]"' in text
    assert (
        "cluster"
        in __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    # Ray runs the same Python on every node: the image's must be the one tested here.
    import sys

    assert re.search(rf"^FROM python:{sys.version_info.major}\.{sys.version_info.minor}-slim$", text, re.M)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_reserves_gpus_for_workers_and_shared_memory_for_rays_object_store(compose):
    svc = compose["services"]
    devices = svc["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    for name in ("ray-head", "ray-worker"):
        assert svc[name].get("shm_size"), name
        assert "runs:/work/runs" in svc[name]["volumes"]  # Tune's checkpoints visible on every node
    assert "--address=ray-head:6379" in svc["ray-worker"]["entrypoint"]


def test_compose_publishes_only_on_localhost_and_gates_start_up_on_health(compose):
    svc = compose["services"]
    published = {p for s in svc.values() for p in s.get("ports", [])}
    assert published == {"127.0.0.1:8265:8265", "127.0.0.1:5000:5000"}
    for name, s in svc.items():
        for dep, cond in (s.get("depends_on") or {}).items():
            want = "service_completed_successfully" if svc[dep].get("restart") == "no" else "service_healthy"
            assert cond == {"condition": want}, (name, dep)
            if want == "service_healthy":
                assert svc[dep].get("healthcheck", {}).get("test"), dep
        if s.get("restart") != "no":  # every long-running service says when it is ready
            assert s.get("healthcheck", {}).get("test"), name


def test_compose_uses_published_images_and_no_credentials(compose):
    images = [s["image"] for s in compose["services"].values() if "image" in s]
    assert not any(i.startswith(("minio/minio", "docker.io/minio/minio")) for i in images)
    assert all(":" in i and not i.endswith(":latest") or i == "tune-run:latest" for i in images)
    text = (DOCKER / "compose.yaml").read_text()
    for key in ("POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        for value in re.findall(rf"{key}: (\S+)", text):
            assert value.startswith("${"), f"{key} must come from docker/.env, got {value}"
    env = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["POSTGRES_PASSWORD"] == env["AWS_SECRET_ACCESS_KEY"] == "change-me"
    assert "docker/.env" in (REPO / ".gitignore").read_text().split()


def test_compose_mlflow_server_runs_on_postgresql_with_s3_artifacts(compose):
    mlflow = compose["services"]["mlflow"]
    cmd = mlflow["entrypoint"]
    assert cmd[:2] == ["mlflow", "server"]
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert cmd[cmd.index("--artifacts-destination") + 1].startswith("s3://")
    assert set(mlflow["depends_on"]) == {"postgres", "storage", "create-bucket"}


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((DOCKER / "kuberay" / "rayjob.yaml").read_text())


def containers(rayjob: dict) -> list[dict]:
    spec = rayjob["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_the_rayjob_requests_whole_gpus_and_shuts_its_cluster_down(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == dockerfile_args()["RAY_VERSION"]  # one Ray everywhere
    workers = [
        c for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]
    ]
    assert workers and all(c["resources"]["requests"].get("nvidia.com/gpu") for c in workers)
    for c in containers(rayjob):
        assert c["resources"]["requests"] == c["resources"]["limits"], c["name"]
    assert len({c["image"] for c in containers(rayjob)}) == 1  # one image, one Ray and Python
    groups = [rayjob["spec"]["rayClusterSpec"]["headGroupSpec"], *rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    assert all(g["template"]["spec"]["securityContext"]["runAsNonRoot"] for g in groups)


def test_the_rayjob_entrypoint_resumes_or_starts_a_real_tune_run_study(rayjob):
    from search.cli import build_parser

    env = {e["name"]: e.get("value") for e in containers(rayjob)[0]["env"]}
    assert env["STUDY_STORAGE"].startswith("s3://") and env["MLFLOW_TRACKING_URI"].startswith("http")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)  # from a secret, not in the file
    assert all(e.get("valueFrom") for e in containers(rayjob)[0]["env"] if "SECRET" in e["name"] or "KEY" in e["name"])
    commands = [shlex.split(part) for part in rayjob["spec"]["entrypoint"].split("||")]
    assert len(commands) == 2
    parsed = []
    for argv in commands:
        assert argv[0] == "tune-run"
        args = build_parser().parse_args(
            [
                a.replace("$STUDY_STORAGE", env["STUDY_STORAGE"]).replace(
                    "$MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"]
                )
                for a in argv[1:]
            ]
        )
        assert (REPO / args.spec).is_file()
        assert f"experiment.output_dir={env['STUDY_STORAGE']}" in args.overrides
        assert f"tracking.mlflow_uri={env['MLFLOW_TRACKING_URI']}" in args.overrides
        parsed.append(args)
    assert parsed[0].resume and not parsed[1].resume  # resume when the storage holds the study, else start
    assert parsed[0].spec == parsed[1].spec and parsed[0].overrides == parsed[1].overrides


def test_compose_and_readme_name_a_real_study_command(compose):
    """The command the compose file's header and the README give runs a shipped spec with a parser-valid line."""
    from search.cli import build_parser

    text = (DOCKER / "compose.yaml").read_text()
    line = re.search(r"exec ray-head \\\n#\s+(tune-run .+)$", text, re.M).group(1)
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert (REPO / args.spec).is_file() and args.address == "auto"
