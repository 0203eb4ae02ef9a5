"""The deploy files say what a user would check before trusting them, with no network and no cluster.

Kubernetes manifests against the Kubernetes schemas (kubernetes-validate) and KEDA's ScaledObject by
hand against the project's own queue names; compose.yaml's start order, health checks and
environment; the systemd units' restart and ordering; the Grafana dashboard's metric names. Tools
that may be missing here (``docker compose``, ``systemd-analyze``, ``kubectl``) are used where they
exist and skipped, with the reason, where they do not.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from worker.pipeline.actors import DELIVERY_QUEUE, QUEUES
from worker.runtime.broker import NAMESPACE
from worker.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DASHBOARD = DEPLOY / "grafana" / "campaign-dispatch.json"

KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests must fit (and the newest known, below)
HEALTH = ["campaign-dispatch", "health"]
METRICS_PORT = "9191"

# Variables the service reads: its settings, plus boto3's AWS_* for STORAGE_URL=s3://.
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
# Documented in comments only, for the operator to turn on, though the service does not read them
# yet (none now: DKIM_KEYS_DIR is read since it signs mail).
COMMENTED_EXTRA: set[str] = set()


def service_reads(name: str) -> bool:
    return name in SETTINGS_VARS or name.startswith("AWS_")


# --- helpers ------------------------------------------------------------------------------------

def cli_commands() -> dict:
    from worker.cli.main import cli

    return cli.commands


def assert_cli_command(argv: list[str]) -> None:
    """``argv`` (without the program name) names a real command (and sub-command) of the CLI."""
    commands = cli_commands()
    assert argv and argv[0] in commands, f"{argv!r}: no such campaign-dispatch command"
    group = commands[argv[0]]
    if hasattr(group, "commands"):  # a group: the next word is one of its commands
        assert len(argv) > 1 and argv[1] in group.commands, f"{argv!r}: no such sub-command"


def parse_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """``NAME=value`` lines (values as written) and the names of commented-out ``#NAME=`` lines."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            match = re.match(r"#\s*([A-Z][A-Z0-9_]*)=", stripped)
            if match:
                commented.add(match.group(1))
            continue
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", stripped)
        assert match, f"{path.name}:{number}: not NAME=value: {line!r}"
        assert match.group(1) not in active, f"{path.name}:{number}: {match.group(1)} set twice"
        active[match.group(1)] = match.group(2)
    return active, commented


def check_env_file(path: Path) -> dict[str, str]:
    active, commented = parse_env_file(path)
    unknown = sorted(name for name in active if not service_reads(name))
    assert not unknown, f"{path.name} sets variables the service never reads: {unknown}"
    unknown = sorted(name for name in commented if not service_reads(name) and name not in COMMENTED_EXTRA)
    assert not unknown, f"{path.name} documents variables the service never reads: {unknown}"
    # The example values pass the service's own validation (a bad one would exit 2 at start).
    Settings(**{name.lower(): value for name, value in active.items() if name in SETTINGS_VARS})
    for required in ("DATABASE_URL", "BROKER_URL", "SMTP_URL", "STORAGE_URL"):
        assert required in active, f"{path.name} does not set {required}"
    assert active["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert active["BROKER_URL"].startswith("redis://")
    return active


# --- Kubernetes ---------------------------------------------------------------------------------

def k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def k8s_by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == kind]


def deployment_running(command: str) -> dict:
    """The one Deployment whose main container runs ``campaign-dispatch <command>``."""
    found = [d for d in k8s_by_kind("Deployment")
             if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == command]
    assert len(found) == 1, f"expected one Deployment running `{command}`, found {len(found)}"
    return found[0]


def main_container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def container_env_names(container: dict) -> set[str]:
    """Every variable a container gets: env, and the keys of the ConfigMaps/Secrets in envFrom."""
    names = {e["name"] for e in container.get("env", [])}
    sources = {(d["kind"], d["metadata"]["name"]): d for d in k8s_by_kind("ConfigMap") + k8s_by_kind("Secret")}
    for ref in container.get("envFrom", []):
        kind, key = ("ConfigMap", "configMapRef") if "configMapRef" in ref else ("Secret", "secretRef")
        source = sources.get((kind, ref[key]["name"]))
        assert source is not None, f"envFrom names a {kind} {ref[key]['name']!r} that no manifest defines"
        names |= set(source.get("data", {})) | set(source.get("stringData", {}))
    return names


def k8s_env(name: str) -> str:
    for kind in ("ConfigMap", "Secret"):
        for doc in k8s_by_kind(kind):
            values = {**doc.get("data", {}), **doc.get("stringData", {})}
            if name in values:
                return values[name]
    raise AssertionError(f"no ConfigMap or Secret sets {name}")


def schema_errors(kubernetes_validate, docs: list[tuple[str, dict]], version: str) -> list[str]:
    """One line per document that does not match the Kubernetes ``version`` schemas (strict)."""
    errors = []
    for name, doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema in kubernetes-validate; checked by hand below
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): "
                          f"{exc.message} at {'.'.join(str(p) for p in exc.path)}")
    return errors


def test_k8s_manifests_match_the_kubernetes_schemas():
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[test]')")
    docs = k8s_documents()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"ConfigMap", "Secret", "Job", "Deployment", "Service", "ScaledObject"} <= kinds
    errors = []
    for version in sorted({KUBERNETES_VERSION, kubernetes_validate.latest_version()}):
        errors += schema_errors(kubernetes_validate, docs, version)
    assert not errors, "\n".join(errors)


def test_k8s_schema_validation_rejects_a_broken_manifest():
    """The validator used above is strict enough to catch a misspelt field and a wrong type."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    worker = deployment_running("worker")
    typo = json.loads(json.dumps(worker))
    main_container(typo)["livenesProbe"] = main_container(typo).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)
    wrong_type = json.loads(json.dumps(worker))
    main_container(wrong_type)["ports"][0]["containerPort"] = "metrics"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    images = {i["name"] for i in kustomization.get("images", [])}
    for deployment in k8s_by_kind("Deployment") + k8s_by_kind("Job"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"].split(":")[0] in images, f"kustomization does not retag {container['image']}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: kustomize build not run")
def test_kustomize_builds_valid_manifests():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(docs) == len(k8s_documents())
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "campaign-dispatch", doc["metadata"]["name"]
    errors = schema_errors(kubernetes_validate, [("kustomize build", d) for d in docs], KUBERNETES_VERSION)
    assert not errors, "\n".join(errors)


def test_k8s_migrations_job_runs_db_upgrade_and_retries():
    (job,) = k8s_by_kind("Job")
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"] == ["db", "upgrade"]
    assert_cli_command(spec["containers"][0]["args"])
    assert spec["restartPolicy"] == "OnFailure"
    assert job["spec"]["backoffLimit"] >= 5, "a database still starting must not fail the migration for good"


@pytest.mark.parametrize("command", ["worker", "scheduler", "api"])
def test_k8s_deployments_are_wired(command):
    deployment = deployment_running(command)
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items(), "the selector does not match the pods"
    container = main_container(deployment)
    assert_cli_command(container["args"])
    for kind in ("requests", "limits"):
        assert container["resources"].get(kind, {}).get("memory"), f"{command}: no memory {kind}"
    assert container["resources"]["requests"].get("cpu"), f"{command}: no cpu request"
    names = container_env_names(container)
    for required in ("DATABASE_URL", "BROKER_URL", "SMTP_URL", "STORAGE_URL"):
        assert required in names, f"{command} has no {required}"
    assert k8s_env("STORAGE_URL").startswith("s3://"), "pods do not share a file:// directory: use S3"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in container, f"{command} has no {probe}"
    if command == "api":
        port = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/healthz"
            assert port.get(get["port"], get["port"]) == int(container["args"][container["args"].index("--port") + 1])
        (service,) = k8s_by_kind("Service")
        assert service["spec"]["selector"].items() <= labels.items(), "the Service selects no api pod"
    else:
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"] == HEALTH
            assert container[probe]["timeoutSeconds"] >= 5, "the health command needs seconds to start"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("METRICS_PORT") == METRICS_PORT
        assert {"name": "metrics", "containerPort": int(METRICS_PORT)} in container["ports"]


def test_k8s_scheduler_runs_more_than_once():
    assert deployment_running("scheduler")["spec"]["replicas"] >= 2


def test_keda_scales_the_worker_deployment_on_the_delivery_queue():
    (scaled,) = k8s_by_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    worker = deployment_running("worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert "replicas" not in worker["spec"], "KEDA owns the worker count: a fixed replicas fights it on apply"
    assert scaled["spec"]["minReplicaCount"] >= 1, "the campaigns and default queues need a worker always"
    assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    # The ready list of Dramatiq's Redis broker for the delivery queue, from the project's constants.
    assert DELIVERY_QUEUE in QUEUES
    assert metadata["listName"] == f"{NAMESPACE}:{DELIVERY_QUEUE}"
    assert int(metadata["listLength"]) > 0
    # KEDA reads the address from the worker container's environment.
    address_var = metadata["addressFromEnv"]
    assert address_var in container_env_names(main_container(worker))
    broker = urlsplit(k8s_env("BROKER_URL"))
    assert k8s_env(address_var) == f"{broker.hostname}:{broker.port or 6379}", "KEDA watches another Redis"
    assert metadata.get("databaseIndex", "0") == (broker.path.strip("/") or "0"), "KEDA watches another database"


def test_health_command_exists():
    """Every health check of worker and scheduler (compose, Kubernetes) runs `campaign-dispatch health`."""
    assert_cli_command(HEALTH[1:])
    for deployment in (deployment_running("worker"), deployment_running("scheduler")):
        for init in deployment["spec"]["template"]["spec"].get("initContainers", []):
            assert " ".join(HEALTH) in " ".join(init["command"]), "the init container does not wait on health"


# --- compose ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_command(service: dict) -> list[str]:
    """The campaign-dispatch arguments a service runs (the image's entrypoint is the CLI)."""
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


LONG_RUNNING = ("scheduler", "worker", "api")


def test_compose_migrates_before_anything_runs(compose):
    services = compose["services"]
    migrate = services["migrate"]
    script = " ".join(compose_command(migrate))
    assert "campaign-dispatch db upgrade" in script, "migrate does not run db upgrade"
    assert migrate.get("entrypoint") == ["sh", "-c"] and "seq" in script, "db upgrade is not retried"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no", "a one-shot that restarts never completes"
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", f"{name} must reach Redis (the api enqueues)"
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert_cli_command(compose_command(services[name]))
        assert services[name].get("restart") in {"always", "unless-stopped"}, name


def test_compose_health_checks_every_long_running_service(compose):
    services = compose["services"]
    for name, service in services.items():
        if name == "migrate":
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] != "NONE" and not service["healthcheck"].get("disable"), f"{name} has no health check"
    for name in ("worker", "scheduler"):
        assert services[name]["healthcheck"]["test"] == ["CMD", *HEALTH], name
    api = services["api"]
    command = compose_command(api)
    port = command[command.index("--port") + 1]
    probe = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in probe, "the api health check does not hit its /healthz"
    assert probe.startswith("CMD python -c"), "the image has python, not curl"
    for name, service in services.items():  # service_healthy only on services that have a check
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on a missing service {dependency}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"


def test_compose_metrics_port(compose):
    for name in ("worker", "scheduler"):
        assert str(compose["services"][name]["environment"]["METRICS_PORT"]) == METRICS_PORT


def test_compose_environment_comes_from_env_example(compose):
    services = compose["services"]
    for name in ("migrate", *LONG_RUNNING):
        files = services[name]["env_file"]
        paths = [(f["path"], f.get("required", True)) if isinstance(f, dict) else (f, True) for f in files]
        assert (".env.example", True) in paths, f"{name} does not read .env.example"
        for path, required in paths:
            assert not required or (COMPOSE.parent / path).is_file(), f"{name}: env_file {path} is missing"
    env = check_env_file(ENV_EXAMPLE)
    # The example brings the stack up as it is: its URLs name this file's services and credentials.
    database = urlsplit(env["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.hostname == "postgres" and database.port == 5432
    assert database.username == postgres["POSTGRES_USER"] and database.path == "/" + postgres["POSTGRES_DB"]
    default_password = re.fullmatch(r"\$\{POSTGRES_PASSWORD:-(.*)\}", postgres["POSTGRES_PASSWORD"])
    assert default_password and database.password == default_password.group(1)
    assert urlsplit(env["BROKER_URL"]).hostname in services
    assert urlsplit(env["SMTP_URL"]).hostname in services, "SMTP_URL names no service: the stack would not be healthy"
    storage = env["STORAGE_URL"]
    if storage.startswith("file://"):
        directory = urlsplit(storage).path
        for name in LONG_RUNNING:
            mounts = [v.split(":")[1] for v in services[name].get("volumes", [])]
            assert any(directory == m or directory.startswith(m + "/") for m in mounts), \
                f"{name} does not mount the storage directory {directory}"
    assert (DEPLOY / ".gitignore").read_text().splitlines().count(".env") == 1, "deploy/.env may be committed"


def compose_v2() -> list[str] | None:
    """``docker compose`` (the plugin), else a standalone ``docker-compose`` of version 2; else None."""
    candidates = []
    if shutil.which("docker"):
        candidates.append([shutil.which("docker"), "compose"])
    if shutil.which("docker-compose"):
        candidates.append([shutil.which("docker-compose")])
    for command in candidates:
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=60)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


def test_compose_config_is_valid():
    command = compose_v2()
    if command is None:
        pytest.skip("neither `docker compose` nor a docker-compose v2 is installed: `compose config` not run")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    # Some wrappers of the binary exit 0 after an error: its message is the sign.
    problems = [line for line in result.stderr.splitlines() if re.search(r"validating|error|invalid", line, re.I)]
    assert result.returncode == 0 and not problems, result.stderr


def test_dockerfile_has_what_weasyprint_needs():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for package in ("libpango-1.0-0", "libpangoft2-1.0-0", "fonts-dejavu-core"):
        assert package in dockerfile
    assert 'ENTRYPOINT ["campaign-dispatch"]' in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.M), "a numeric user lets runAsNonRoot check it"
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.M))
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages <= copied, f"the image misses packages: {sorted(packages - copied)}"


# --- systemd ------------------------------------------------------------------------------------

VENV_CLI = "/opt/campaign-dispatch/.venv/bin/campaign-dispatch"
MIGRATE_UNIT = "campaign-dispatch-migrate.service"


def load_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def units() -> dict[str, configparser.ConfigParser]:
    return {p.name: load_unit(p) for p in sorted(SYSTEMD.glob("campaign-dispatch*.service"))}


def test_systemd_units_restart_and_survive_an_outage():
    found = units()
    assert {MIGRATE_UNIT, "campaign-dispatch-worker.service", "campaign-dispatch-scheduler.service",
            "campaign-dispatch-api.service"} <= set(found)
    env_files = set()
    for name, unit in found.items():
        service = unit["Service"]
        assert service.get("Restart") in {"always", "on-failure"}, name
        assert float(service["RestartSec"]) > 0, name
        assert unit["Unit"].get("StartLimitIntervalSec") == "0", f"{name} gives up after a few restarts"
        assert service.get("User") not in (None, "root"), name
        env_files.add(service["EnvironmentFile"])
        argv = service["ExecStart"].split()
        assert argv[0] == VENV_CLI, name
        assert_cli_command(argv[1:])
        for dependency in ("network-online.target", "postgresql.service"):
            assert dependency in unit["Unit"]["After"].split(), f"{name} is not ordered after {dependency}"
    assert len(env_files) == 1, "every unit reads one environment file"
    migrate = found[MIGRATE_UNIT]["Service"]
    assert migrate["Type"] == "oneshot" and migrate["RemainAfterExit"] == "yes"
    assert migrate["ExecStart"].split()[1:] == ["db", "upgrade"]


@pytest.mark.parametrize("name", ["worker", "scheduler", "api"])
def test_systemd_roles_start_after_the_migration(name):
    unit = units()[f"campaign-dispatch-{name}.service"]["Unit"]
    assert MIGRATE_UNIT in unit["After"].split()
    assert "redis-server.service" in unit["After"].split()
    pulls = unit.get("Wants", "").split() + unit.get("Requires", "").split()
    assert MIGRATE_UNIT in pulls, f"starting the {name} does not run the migration"


def test_systemd_target_and_environment_example():
    target = load_unit(SYSTEMD / "campaign-dispatch.target")
    assert set(target["Unit"]["Wants"].split()) == set(units())
    assert target["Install"]["WantedBy"] == "multi-user.target"
    for name, unit in units().items():
        assert unit["Unit"].get("PartOf") == "campaign-dispatch.target", name
    env = check_env_file(SYSTEMD / "campaign-dispatch.env.example")
    assert env.get("METRICS_PORT") == METRICS_PORT
    readme = (SYSTEMD / "README.md").read_text()
    for step in ("useradd --system", "daemon-reload", "enable --now", "/etc/systemd/system/",
                 "campaign-dispatch.env.example"):
        assert step in readme, f"the install steps miss {step!r}"
    assert units()[MIGRATE_UNIT]["Service"]["EnvironmentFile"] in readme


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The units name the install path; point them at this checkout's CLI so the command check passes.
    cli = Path(sys.executable).parent / "campaign-dispatch"
    if not cli.exists():
        pytest.skip(f"{cli} is not installed")
    paths = []
    for source in sorted(SYSTEMD.glob("campaign-dispatch*.service")) + [SYSTEMD / "campaign-dispatch.target"]:
        copy = tmp_path / source.name
        copy.write_text(source.read_text().replace(VENV_CLI, str(cli)))
        paths.append(str(copy))
    result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, timeout=120)
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if str(tmp_path) in line or "campaign-dispatch" in line]
    if result.returncode != 0 and not ours:
        pytest.skip(f"systemd-analyze cannot run here: {(result.stderr or result.stdout).strip()[:200]}")
    assert result.returncode == 0 and not ours, "\n".join(ours)


# --- Grafana ------------------------------------------------------------------------------------

METRICS = {
    "campaign_dispatch_recipients_total",
    "campaign_dispatch_smtp_send_seconds",
    "campaign_dispatch_queue_messages",
    "campaign_dispatch_campaigns",
    "campaign_dispatch_render_seconds",
}
HISTOGRAMS = {"campaign_dispatch_smtp_send_seconds", "campaign_dispatch_render_seconds"}
SERIES = METRICS | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def promql_series(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (names before `{`/`[` or bare, not functions)."""
    for opening, closing in ("()", "{}", "[]"):
        assert expr.count(opening) == expr.count(closing), f"unbalanced {opening}{closing} in {expr!r}"
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\(?)", text):
        word, call = match.groups()
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_promql_series_finds_metric_names():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(campaign_dispatch_smtp_send_seconds_bucket'
            '{channel=~"$channel"}[$__rate_interval]))) / on (x) up')
    assert promql_series(expr) == {"campaign_dispatch_smtp_send_seconds_bucket", "up"}


def test_grafana_dashboard_uses_only_the_service_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = []
    for variable in variables.values():
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            exprs.append(target["expr"])
    used = set()
    for expr in exprs:
        label_values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", expr)
        names = {label_values.group(1)} if label_values else promql_series(expr)
        assert names and names <= SERIES, f"{expr!r} uses {sorted(names - SERIES)}"
        used |= {re.sub(r"_(bucket|sum|count)$", "", n) if n.rsplit("_", 1)[0] in HISTOGRAMS else n for n in names}
    assert used == METRICS, f"the dashboard never shows {sorted(METRICS - used)}"
    outcome_panel = [t["expr"] for p in panels for t in p["targets"]
                     if "campaign_dispatch_recipients_total" in t["expr"] and "by (outcome)" in t["expr"]]
    assert outcome_panel and all("rate(" in e for e in outcome_panel), "no rate per outcome"
    # Label values the service really writes.
    from storage.statuses import CampaignStatus

    known = {"outcome": {"sent", "failed", "skipped", "retried"}, "state": {"ready", "delayed", "dead"},
             "status": {str(s) for s in CampaignStatus}}
    for expr in exprs:
        for label, values in re.findall(r'\b(outcome|state|status)=~?"([^"]*)"', expr):
            assert set(values.split("|")) <= known[label], f"{expr!r}: no such {label} {values!r}"
    quantiles = {q for e in exprs for q in re.findall(r"histogram_quantile\((0\.\d+),.*?smtp_send_seconds_bucket", e)}
    assert {"0.5", "0.99"} <= quantiles, "SMTP p50 and p99 are not both shown"
