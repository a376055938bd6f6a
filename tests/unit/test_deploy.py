"""The deployment files (docker-compose.yml, deploy/) agree with each other and with the code.

No Docker engine or cluster runs here, so these tests read the files: every file they copy or mount
exists, every variable they set is one the gateway reads, every port one side names is the port the
other side listens on, and every path a probe asks for is served by the app.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from app.config import ENV_OVERRIDES, load_config, parse_config
from app.tools.demo import demo_routes
from app.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Variables the gateway reads besides the overrides: the config path, and OpenTelemetry's own.
KNOWN_ENV = set(ENV_OVERRIDES) | {"API_GATEWAY_CONFIG"}


def _known_variable(name: str) -> bool:
    """The gateway's own names must be ones it reads (a typo would be ignored silently); besides
    them only the standard ones of Python, pip and OpenTelemetry."""
    return name in KNOWN_ENV or name.startswith(("OTEL_", "PYTHON", "PIP_"))


# -- readers ---------------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def gateway_services(profile: str | None = None) -> dict[str, dict[str, Any]]:
    """The gateway replicas that ``docker compose up`` starts (``profile``: those only that profile adds)."""
    return {name: svc for name, svc in services().items()
            if svc.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
            and "command" not in svc and _profile(svc) == profile}


def _profile(svc: dict[str, Any]) -> str | None:
    profiles = svc.get("profiles", [])
    assert len(profiles) <= 1, profiles
    return profiles[0] if profiles else None


def backend_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if svc.get("command", [])[:4] == [
        "python", "-m", "app", "backend"]}


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def nginx_conf() -> str:
    return re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())


def nginx_upstream_servers() -> list[tuple[str, int]]:
    block = re.search(r"upstream\s+\w+\s*\{(.*?)\}", nginx_conf(), re.S)
    assert block, "deploy/nginx.conf has no upstream block"
    return [(host, int(port)) for host, port in re.findall(r"\bserver\s+([\w.-]+):(\d+)", block.group(1))]


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return docs


def k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def gateway_deployment() -> dict[str, Any]:
    (deployment,) = k8s("Deployment", "apigw")
    return deployment


def gateway_container() -> dict[str, Any]:
    (container,) = gateway_deployment()["spec"]["template"]["spec"]["containers"]
    return container


def compose_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "gateway.yaml").read_text())


# -- docker-compose.yml ----------------------------------------------------------------------

def test_compose_has_persistent_redis_three_replicas_a_balancer_and_two_backends() -> None:
    svcs = services()
    redis_cmd = svcs["redis"]["command"]
    assert redis_cmd[0] == "redis-server" and option(redis_cmd, "--appendonly") == "yes"
    assert any(v.endswith(":/data") for v in svcs["redis"]["volumes"]), "the append-only file needs a volume"
    assert "redis-data" in compose()["volumes"]
    assert len(gateway_services()) == 3
    assert len(backend_services()) == 2
    assert svcs["lb"]["image"].startswith("nginx:")
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in svcs["lb"]["volumes"]


def test_compose_references_only_files_that_exist() -> None:
    for name, svc in services().items():
        build = svc.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which does not exist"
            else:
                assert source in compose()["volumes"], f"{name}: unknown named volume {source}"


def test_compose_sets_only_variables_the_gateway_reads() -> None:
    for name, svc in gateway_services().items():
        env = svc["environment"]
        unknown = [var for var in env if not _known_variable(var)]
        assert not unknown, f"{name}: the gateway reads none of {unknown}"
        mounted = {v.split(":")[1] for v in svc["volumes"]}
        assert env["API_GATEWAY_CONFIG"] in mounted, f"{name}: the config path is not mounted"
        url = urlsplit(env["API_GATEWAY_REDIS_URL"])
        assert url.hostname in services() and url.hostname == "redis"
        assert (url.port or 6379) == 6379


def test_compose_ports_agree_with_nginx_and_the_gateway_config() -> None:
    port = compose_config()["server"]["port"]
    assert set(nginx_upstream_servers()) == {(name, port) for name in gateway_services()}
    for name, svc in gateway_services().items():
        assert all(mapping.endswith(f":{port}") for mapping in svc["ports"]), name
    listen = re.findall(r"\blisten\s+(\d+)\s*;", nginx_conf())
    assert listen and all(any(m.endswith(f":{p}") for m in services()["lb"]["ports"]) for p in listen)


def test_compose_cluster_profile_makes_a_cluster_of_three_masters_and_three_replicas() -> None:
    svcs = services()
    nodes = {name: svc for name, svc in svcs.items() if "--cluster-enabled" in svc.get("command", [])}
    assert len(nodes) == 6
    addresses = {}
    for name, svc in nodes.items():
        argv = svc["command"]
        assert _profile(svc) == "cluster", name
        assert option(argv, "--cluster-enabled") == "yes"
        # A lost shard must not stop the others.
        assert option(argv, "--cluster-require-full-coverage") == "no"
        assert option(argv, "--appendonly") == "yes" and any(v.endswith(":/data") for v in svc["volumes"])
        addresses[name] = f"{svc['networks']['redis-cluster']['ipv4_address']}:{option(argv, '--port')}"
    assert len(set(addresses.values())) == 6
    subnet = compose()["networks"]["redis-cluster"]["ipam"]["config"][0]["subnet"]
    assert all(ipaddress.ip_address(a.split(":")[0]) in ipaddress.ip_network(subnet) for a in addresses.values())

    create = svcs["redis-cluster-create"]
    assert _profile(create) == "cluster" and create["restart"] == "no"
    script = create["command"][-1]
    argv = shlex.split(script.split("||")[-1])
    assert argv[:3] == ["redis-cli", "--cluster", "create"]
    assert sorted(a for a in argv if a.count(".") == 3) == sorted(addresses.values())  # every node, once
    assert option(argv, "--cluster-replicas") == "1" and "--cluster-yes" in argv
    # Idempotent: a cluster already made is left alone on the next `up`.
    assert "cluster_state:ok" in script.split("||")[0]
    assert {name: dep["condition"] for name, dep in create["depends_on"].items()} == dict.fromkeys(
        nodes, "service_healthy")
    assert all(node["healthcheck"]["test"][-2:] == ["redis-cli", "ping"] for node in nodes.values())


def test_compose_cluster_gateways_start_on_the_cluster_once_it_is_made() -> None:
    gateways = gateway_services("cluster")
    assert len(gateways) == 3
    node_names = {name for name, svc in services().items() if "--cluster-enabled" in svc.get("command", [])}
    port = compose_config()["server"]["port"]
    host_ports = set()
    for name, svc in gateways.items():
        env = svc["environment"]
        assert all(_known_variable(var) for var in env), name
        assert "API_GATEWAY_REDIS_URL" not in env
        seeds = env["API_GATEWAY_REDIS_CLUSTER_NODES"].split(",")
        assert seeds and all(seed.split(":")[0] in node_names and seed.endswith(":6379") for seed in seeds)
        assert "redis-cluster" in svc["networks"] and "default" in svc["networks"]  # the nodes and the backends
        assert svc["depends_on"]["redis-cluster-create"]["condition"] == "service_completed_successfully"
        assert env["API_GATEWAY_CONFIG"] in {v.split(":")[1] for v in svc["volumes"]}
        (mapping,) = svc["ports"]
        assert mapping.endswith(f":{port}")
        host_ports.add(mapping.rsplit(":", 1)[0])
        # The config file and this environment make a cluster store (cluster_nodes wins over its url).
        config = parse_config(compose_config(), {k: str(v) for k, v in env.items()}, "deploy/gateway.yaml")
        assert config.redis.cluster_nodes == seeds
    assert len(host_ports) == 3
    assert not host_ports & {m.rsplit(":", 1)[0] for svc in gateway_services().values() for m in svc["ports"]}


def test_routes_go_to_the_compose_backends_on_the_ports_they_listen_on() -> None:
    backends = {name: int(option(svc["command"], "--port")) for name, svc in backend_services().items()}
    config = parse_config(compose_config(), {}, "deploy/gateway.yaml")
    for route in config.router.routes:
        for target in route.targets:
            url = urlsplit(target.url)
            assert backends.get(url.hostname) == url.port, f"{route.key}: {target.url} is no backend"
    # The compose demo and `python -m app fleet` show the same routes, so the README's walkthrough
    # runs against either.
    a, b = (f"http://{name}:{port}" for name, port in sorted(backends.items()))
    assert compose_config()["router"]["routes"] == demo_routes(a, b)


def test_gateway_config_passes_check_config() -> None:
    done = subprocess.run([sys.executable, "-m", "app", "check-config", "deploy/gateway.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: deploy/gateway.yaml: 4 route(s), redis redis://redis:6379/0")


# -- deploy/Dockerfile -----------------------------------------------------------------------

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's steps, one list per FROM."""
    stages: list[list[tuple[str, str]]] = []
    for op, args in dockerfile():
        if op == "FROM":
            stages.append([])
        stages[-1].append((op, args))
    return stages


def test_dockerfile_is_small_non_root_and_copies_what_exists() -> None:
    steps = dockerfile()
    assert all(args.split()[0] == "python:3.11-slim" for op, args in steps if op == "FROM")
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    copies = [args.split() for op, args in steps if op == "COPY"]
    assert copies
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "**" in ignore  # the build context is the repository root: the ignore file keeps it small
    for args in copies:
        if any(a.startswith("--from=") for a in args):
            continue
        for source in [a for a in args[:-1] if not a.startswith("--")]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"COPY {source}: the ignore file leaves it out"


def test_dockerfile_installs_the_wheel_that_the_packaging_test_installs() -> None:
    """Not editable: the image runs the package from site-packages, lua/ carried inside the wheel.
    The wheel is built from what tests/e2e/test_packaging.py builds and runs from another directory."""
    from tests.e2e.test_packaging import SOURCES

    build, final = dockerfile_stages()
    sources = {a for op, args in build if op == "COPY" for a in args.split()[:-1]}
    assert sources == set(SOURCES)
    assert any(op == "RUN" and "pip wheel" in args and "--no-deps" in args for op, args in build)
    (stage_name,) = [args.split()[-1] for op, args in build if op == "FROM"]
    assert any(op == "COPY" and f"--from={stage_name}" in args for op, args in final)
    installs = [args for op, args in final if op == "RUN" and "pip install" in args]
    assert installs and not any(" -e " in f" {args} " or "--editable" in args for args in installs)
    # The working directory must hold no app/ (python -m would import it ahead of the install).
    assert not any(op == "COPY" and args.split()[0] in ("app", ".") for op, args in final)


def test_dockerfile_healthcheck_and_port_match_the_config() -> None:
    steps = dict(dockerfile())
    port = compose_config()["server"]["port"]
    assert steps["EXPOSE"] == str(port)
    assert f"http://127.0.0.1:{port}/_gateway/health" in steps["HEALTHCHECK"]
    cmd = json.loads(steps["CMD"])
    assert cmd[:4] == ["python", "-m", "app", "serve"] and option(cmd, "--port") == str(port)
    env = dict(re.findall(r"(\w+)=(\S+)", steps["ENV"]))
    assert all(_known_variable(name) for name in env)
    copies = [args.split() for op, args in dockerfile() if op == "COPY"]
    assert ["deploy/gateway.yaml", env["API_GATEWAY_CONFIG"]] in copies


async def test_every_probed_path_is_served_by_the_app() -> None:
    probes = {"/_gateway/health"}  # the Dockerfile's HEALTHCHECK
    container = gateway_container()
    probes |= {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert probes == {"/_gateway/health", "/_gateway/ready"}
    config = parse_config({**compose_config(), "redis": {"url": None}}, {}, "deploy/gateway.yaml")
    gateway = Gateway(config)
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for path in sorted(probes):
            answer = await client.get(path)
            assert answer.status_code == 200, path


def test_nginx_conf_is_valid_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    # The compose service names do not resolve here: check the syntax with loopback in their place.
    text = (DEPLOY / "nginx.conf").read_text()
    for name in gateway_services():
        text = text.replace(f"{name}:", "127.0.0.1:")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-g", f"pid {tmp_path}/nginx.pid;"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "keepalive" in nginx_conf()


def _seconds(conf: str, directive: str) -> float:
    found = re.search(rf"\b{directive}\s+(\d+)s?;", conf)
    assert found, f"no {directive} in the nginx config"
    return float(found.group(1))


@pytest.mark.parametrize("which", ["deploy/nginx.conf", "python -m app fleet"])
def test_the_load_balancer_waits_out_the_gateways_own_timeouts(which: str, tmp_path: Path) -> None:
    """nginx in front of the replicas must not time out (HTML 504, the GET sent again to another
    replica) an answer that the gateway's default route timeouts still allow."""
    from app.config import TimeoutSpec
    from app.tools.fleet import nginx_conf as fleet_nginx_conf

    conf = nginx_conf() if which == "deploy/nginx.conf" else fleet_nginx_conf(tmp_path, "127.0.0.1", 8080, [8081],
                                                                               "127.0.0.1")
    default = TimeoutSpec()
    assert _seconds(conf, "proxy_read_timeout") >= 5 * (default.connect + default.read)
    assert _seconds(conf, "proxy_connect_timeout") <= 5  # a replica that cannot take a connection is skipped


# -- deploy/k8s ------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest_and_each_exists() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_deployment_probes_ports_and_env() -> None:
    deployment = gateway_deployment()
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    container = gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/_gateway/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/_gateway/health", "port": "http"}
    assert ports["http"] == compose_config()["server"]["port"] == int(option(container["args"], "--port"))
    env = {e["name"]: e for e in container["env"]}
    assert all(_known_variable(name) for name in env), sorted(env)
    # The config file: the path the variable names is where the ConfigMap's key is mounted.
    config_path = Path(env["API_GATEWAY_CONFIG"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    (mount_name,) = [n for n, path in mounts.items() if path == str(config_path.parent)]
    configmap_name = volumes[mount_name]["configMap"]["name"]
    (configmap,) = k8s("ConfigMap", configmap_name)
    assert config_path.name in configmap["data"]
    # The admin token comes from a Secret that the manifests define, under the key they give it.
    ref = env["API_GATEWAY_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    (secret,) = k8s("Secret", ref["name"])
    assert ref["key"] in secret["stringData"]
    # Non-root, as the image.
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_service_and_hpa_point_at_the_deployment() -> None:
    deployment = gateway_deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = k8s("Service", "apigw")
    assert service["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"] for p in gateway_container()["ports"]}
    assert all(p["targetPort"] in container_ports for p in service["spec"]["ports"])
    (hpa,) = k8s("HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # A CPU target needs CPU requests to compute utilisation against.
    assert gateway_container()["resources"]["requests"]["cpu"]


def test_redis_is_persistent_and_where_the_gateway_looks() -> None:
    (statefulset,) = k8s("StatefulSet", "redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert option(container["args"], "--appendonly") == "yes"
    data_mount = option(container["args"], "--dir")
    assert data_mount in {m["mountPath"] for m in container["volumeMounts"]}
    assert statefulset["spec"]["volumeClaimTemplates"]
    env = {e["name"]: e.get("value") for e in gateway_container()["env"]}
    url = urlsplit(env["API_GATEWAY_REDIS_URL"])
    (service,) = k8s("Service", url.hostname)
    assert service["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    redis_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(redis_ports[p["targetPort"]] == 6379 for p in service["spec"]["ports"])


def test_k8s_config_is_the_compose_config_and_its_backends_exist(tmp_path: Path) -> None:
    (configmap,) = k8s("ConfigMap", "apigw-config")
    text = configmap["data"]["gateway.yaml"]
    assert yaml.safe_load(text) == compose_config()
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    config = load_config(path, env={})
    services_by_name = {s["metadata"]["name"]: s for s in k8s("Service")}
    for route in config.router.routes:
        for target in route.targets:
            url = urlsplit(target.url)
            assert url.hostname in services_by_name, target.url
            assert url.port in {p["port"] for p in services_by_name[url.hostname]["spec"]["ports"]}
    deployments = {d["metadata"]["name"]: d for d in k8s("Deployment")}
    for name in ("backend-a", "backend-b"):
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        argv = shlex.split(" ".join(container["command"]))
        assert argv[:4] == ["python", "-m", "app", "backend"]
        assert int(option(argv, "--port")) in {p["port"] for p in services_by_name[name]["spec"]["ports"]}


def test_the_fleet_runs_the_compose_config_with_local_addresses() -> None:
    from app.tools.fleet import fleet_config

    compose_side = compose_config()
    local = fleet_config("redis://127.0.0.1:6390/0", "http://127.0.0.1:9001", "http://127.0.0.1:9002",
                         "token-for-the-test", "127.0.0.1")
    for section in ("cache", "circuit_breaker"):
        assert local[section] == compose_side[section], section
    assert local["rate_limiter"]["default"] == compose_side["rate_limiter"]["default"]
    assert local["router"]["routes"] == demo_routes("http://127.0.0.1:9001", "http://127.0.0.1:9002")
    parse_config(local, {}, "fleet")


def test_every_manifest_validates_against_the_kubernetes_schema() -> None:
    # kubernetes-validate (a test dependency) ships the API's schemas; strict: an unknown field is an error.
    import kubernetes_validate
    version = kubernetes_validate.latest_version()
    for doc in k8s_documents():
        kubernetes_validate.validate(doc, version, strict=True)
