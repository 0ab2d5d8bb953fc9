"""Kubernetes manifests: valid offline (kubernetes-validate --strict), and in agreement with Compose."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import sqlalchemy
import yaml

from study_contract.options import options_of
from study_contract.store.claims import claim
from study_contract.store.storage import open_storage
from tests.conftest import REPO, create_tiny_study, run_cli
from worker.config import WorkerConfig

KUBE = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30", "1.37")
CRD_KINDS = {"ScaledJob", "TriggerAuthentication"}  # KEDA's; kubernetes-validate has no schema for them


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _rendered(directory: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a copy with secrets.env written from the example, as a user would."""
    copy = tmp_path / directory.name
    shutil.copytree(directory, copy)
    if (copy / "secrets.env.example").exists():
        shutil.copy(copy / "secrets.env.example", copy / "secrets.env")
    out = subprocess.run(["kubectl", "kustomize", str(copy)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _manifests() -> list[dict[str, Any]]:
    files = [p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml"]
    return [d for p in files for d in _documents(p)]


def by_kind(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


def test_every_manifest_validates_strictly() -> None:
    documents = _manifests()
    assert {d["kind"] for d in documents} >= {"StatefulSet", "Job", "Deployment", "Service", "PersistentVolumeClaim",
                                              "ScaledJob"}  # fmt: skip
    for document in documents:
        if document["kind"] == "ScaledJob":  # its Job is a plain Job: validate that
            document = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "burst"},
                        "spec": document["spec"]["jobTargetRef"]}  # fmt: skip
        elif document["kind"] in CRD_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)


def test_a_misspelled_field_is_caught(tmp_path: Path) -> None:
    worker = by_kind(_manifests(), "Deployment", "worker")
    worker["spec"]["template"]["spec"]["containers"][0]["resouces"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="'resouces' was unexpected"):
        kubernetes_validate.validate(worker, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
def test_the_kustomization_renders_and_generates_the_secret(tmp_path: Path) -> None:
    rendered = _rendered(KUBE, tmp_path)
    for document in rendered:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[0], strict=True)
    secret = next(d for d in rendered if d["kind"] == "Secret")
    assert secret["metadata"]["name"].startswith("tuner-secrets-")  # content-hashed: a new password rolls pods
    assert all(d["metadata"].get("namespace") == "locomotion-tuner" for d in rendered if d["kind"] != "Namespace")
    worker = by_kind(rendered, "Deployment", "worker")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]
            if "valueFrom" in e}  # fmt: skip
    assert refs == {secret["metadata"]["name"]}
    keda = _rendered(KUBE / "keda", tmp_path)
    assert {d["kind"] for d in keda} == CRD_KINDS


def test_no_password_is_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "deploy/kubernetes/secrets.env"], cwd=REPO, capture_output=True)
    assert ignored.returncode == 0
    for document in _manifests():
        assert document["kind"] != "Secret"
        for container in document.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for variable in container.get("env", []):
                assert "PASSWORD" not in variable["name"] or "valueFrom" in variable, variable
    assert "secretGenerator" in (KUBE / "kustomization.yaml").read_text()


def _container(document: dict[str, Any]) -> dict[str, Any]:
    return document["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_manifests_and_compose_agree() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    documents = _manifests()
    worker, dashboard = by_kind(documents, "Deployment", "worker"), by_kind(documents, "Deployment", "dashboard")
    init = by_kind(documents, "Job", "init")
    assert compose["worker"]["image"].split(":")[0] == _container(worker)["image"] == _container(init)["image"]

    worker_variables = {o.env for o in options_of(WorkerConfig)}
    in_compose = set(compose["worker"]["environment"]) & worker_variables
    in_kubernetes = set(_env(_container(worker))) & worker_variables
    assert in_compose == in_kubernetes and {"DATABASE_URL", "WORKER_DRAIN_SECONDS"} <= in_kubernetes

    drain = float(_env(_container(worker))["WORKER_DRAIN_SECONDS"])
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    assert int(compose["worker"]["stop_grace_period"].rstrip("s")) > float(
        compose["worker"]["environment"]["WORKER_DRAIN_SECONDS"].split(":-")[1].rstrip("}"))  # fmt: skip
    assert _container(worker)["livenessProbe"]["exec"]["command"] == ["worker", "--check-health"]
    assert _container(worker)["resources"]["requests"]["cpu"] == "1"
    assert _env(_container(worker))["WORKER_THREADS"] == "1"

    # Roles: the worker and the dashboard connect as their own roles; only init holds the superuser.
    assert "$(WORKER_DB_USER)" in _env(_container(worker))["DATABASE_URL"]
    assert "${WORKER_DB_USER" in compose["worker"]["environment"]["DATABASE_URL"]
    assert "$(DASHBOARD_DB_USER)" in _env(_container(dashboard))["DATABASE_URL"]
    assert "${DASHBOARD_DB_USER" in compose["dashboard"]["environment"]["DATABASE_URL"]
    assert "$(POSTGRES_USER)" in _env(_container(init))["DATABASE_URL"]
    for document in (worker, dashboard):
        assert "POSTGRES_PASSWORD" not in str(document)
    assert _container(dashboard)["command"] == compose["dashboard"]["command"][:2] + ["--host", "0.0.0.0", "--port",
                                                                                          "8080"]  # fmt: skip
    service = by_kind(documents, "Service", "dashboard")
    assert service["spec"]["type"] == "ClusterIP"  # no public exposure: kubectl port-forward
    assert _container(dashboard)["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_keda_starts_a_job_per_waiting_trial_of_unpaused_studies(pg_url: str, tiny_space: Path) -> None:
    """Jobs that end by themselves (no scale-down stops a busy worker), running the Deployment's very worker."""
    scaled = by_kind(_manifests(), "ScaledJob", "worker-burst")
    job = scaled["spec"]["jobTargetRef"]["template"]["spec"]
    deployed = _container(by_kind(_manifests(), "Deployment", "worker"))
    assert {**job["containers"][0], "command": deployed["command"]} == deployed
    assert job["containers"][0]["command"] == ["worker", "--until-idle"] and job["restartPolicy"] == "Never"
    assert scaled["spec"]["scalingStrategy"] == {"strategy": "accurate"}  # claimed trials are not in the count
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql" and all(isinstance(v, str) for v in trigger["metadata"].values())
    auth = by_kind(_manifests(), "TriggerAuthentication", trigger["authenticationRef"]["name"])
    example = (KUBE / "secrets.env.example").read_text()
    assert all(f"{ref['key']}=" in example for ref in auth["spec"]["secretTargetRef"])

    create_tiny_study(pg_url, "live", tiny_space, 3, 256)
    create_tiny_study(pg_url, "resting", tiny_space, 4, 256)
    assert run_cli("study_admin", "pause", "resting", "--storage", pg_url).returncode == 0
    storage = open_storage(pg_url)
    assert claim(storage, storage.get_study_id_from_name("live"), grace_period=120) is not None  # a busy worker
    engine = sqlalchemy.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text(trigger["metadata"]["query"])).scalar() == 2
    engine.dispose()


def test_the_lock_pins_everything_the_image_needs() -> None:
    """requirements.lock (what the Dockerfile installs, deploy/lock.py) covers the project's dependencies."""
    from packaging.requirements import Requirement

    from deploy.lock import EXTRAS, LEFT_OUT, PROJECT, canonical, closure

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    assert set(closure(PROJECT, EXTRAS)) <= set(pins), "run python deploy/lock.py"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = [*project["dependencies"], *(r for extra in EXTRAS for r in project["optional-dependencies"][extra])]
    for text in direct:
        requirement = Requirement(text)
        if canonical(requirement.name) not in LEFT_OUT:
            assert requirement.specifier.contains(pins[canonical(requirement.name)]), text


PREFLIGHT = ["sh", str(REPO / "deploy" / "preflight.sh"), str(REPO / ".env.example"), str(REPO / "docker-compose.yml")]
PASSWORD_VARIABLES = ("POSTGRES_PASSWORD", "ADMIN_DB_PASSWORD", "WORKER_DB_PASSWORD", "DASHBOARD_DB_PASSWORD")


def _preflight(bind: str, passwords: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PREFLIGHT, capture_output=True, text=True, env={"DB_BIND": bind, **passwords})


@pytest.mark.parametrize("known", ["change-me-worker", "local-only-worker", ""])
def test_preflight_refuses_to_publish_with_a_password_anyone_can_read(known: str) -> None:
    """A copied .env.example (change-me-*), a Compose default (local-only-*) or no password at all."""
    own = {name: f"own-{name.lower()}-7f3a" for name in PASSWORD_VARIABLES}
    refused = _preflight("0.0.0.0", {**own, "WORKER_DB_PASSWORD": known})
    assert refused.returncode == 1
    assert "WORKER_DB_PASSWORD is empty or published in .env.example or docker-compose.yml" in refused.stderr
    assert _preflight("0.0.0.0", own).returncode == 0  # positive control: passwords of one's own
    assert _preflight("127.0.0.1", {**own, "WORKER_DB_PASSWORD": known}).returncode == 0  # loopback only: fine
