"""The files in deploy/ are the ones we test: nginx accepts the config, systemd accepts the
units, and Django's deployment checks pass with the documented environment."""

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.db import connection

from bench.prod import POOLS, local_upstreams, nginx_config
from tests.chaos.infra import free_port
from tests.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def documented_env() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "roundtrip.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_it_documents_every_production_setting_the_units_need():
    env = documented_env()
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "SITE_URL"):
        assert env.get(name), name
    assert env["POSTBACKS_ALLOW_PRIVATE_DESTINATIONS"] == "false"


def test_it_passes_nginx_config_test(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    # The shipped file, with its runtime paths moved into a scratch directory (no root-owned
    # files needed).
    target = nginx_config({}, None, tmp_path)
    result = subprocess.run([nginx, "-t", "-c", str(target)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


UNITS = [
    "roundtrip-redirect",
    "roundtrip-api",
    "roundtrip-portal",
    "roundtrip-worker",
    "roundtrip-beat",
]


@pytest.mark.parametrize("unit", UNITS)
def test_it_passes_systemd_verify(tmp_path, unit):
    text = (DEPLOY / "systemd" / f"{unit}.service").read_text()
    # Point the unit at this checkout and an existing account, as an install would.
    text = (
        text.replace("/opt/roundtrip", str(ROOT))
        .replace("User=roundtrip", "User=root")
        .replace("Group=roundtrip", "Group=root")
        .replace("/etc/roundtrip/roundtrip.env", str(DEPLOY / "roundtrip.env.example"))
    )
    target = tmp_path / f"{unit}.service"
    target.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(target)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert str(ROOT / ".venv" / "bin") in text
    # Every ${VARIABLE} the unit's command line uses is set in the documented environment.
    for name in re.findall(r"\$\{(\w+)\}", text):
        assert documented_env().get(name), name


def test_every_pool_has_its_unit_its_port_and_its_nginx_upstream():
    """The nginx example sends each pool's paths to the port of that pool's unit."""
    config = (DEPLOY / "nginx" / "roundtrip.conf").read_text()
    for pool in ("redirect", "api", "portal"):
        unit = (DEPLOY / "systemd" / f"roundtrip-{pool}.service").read_text()
        port = re.search(r"--port (\d+)", unit).group(1)
        upstream = config[config.index(f"upstream roundtrip_{pool} {{") :]
        upstream = upstream[: upstream.index("}")]
        assert f":{port} " in upstream, pool
        assert f"proxy_pass http://roundtrip_{pool};" in config
    assert not (DEPLOY / "systemd" / "roundtrip-web.service").exists()


def deploy_check(tmp_path, **overrides: str | None) -> subprocess.CompletedProcess:
    """`manage.py check --deploy` in a separate process with the documented environment."""
    settings_dict = connection.settings_dict
    env = {
        **os.environ,
        **documented_env(),
        "SECRET_KEY": secrets.token_urlsafe(50),
        # The units create /run/roundtrip-metrics (RuntimeDirectory=); here, a scratch one.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DATABASE_URL": (
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT']}"
            f"/{settings_dict['NAME']}"
        ),
        "REDIS_URL": os.environ["REDIS_URL"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    # Variables other tests (or the developer's shell) may have set that production never has.
    for name in ("DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        env.pop(name, None)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.django_db
def test_it_passes_django_deploy_checks_with_the_documented_settings(tmp_path):
    result = deploy_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_it_fails_the_deploy_check_without_a_metrics_token(tmp_path):
    result = deploy_check(tmp_path, METRICS_BEARER_TOKEN=None)
    assert result.returncode != 0
    assert "postbacks.E101" in result.stderr + result.stdout


def test_it_keeps_metrics_off_the_public_server(tmp_path):
    """The real nginx, with the deploy config and a stand-in web node: /metrics is answered
    404 by nginx itself, everything else reaches the node."""
    node = Receiver().start()
    port = free_port()
    # Every pool's upstream is the stand-in node.
    config = nginx_config(
        local_upstreams(dict.fromkeys(POOLS, node.port)), f"127.0.0.1:{port}", tmp_path
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen(
        [nginx, "-c", str(config), "-g", "daemon off;"], stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                healthz = requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "nginx"
                time.sleep(0.1)
        assert healthz.status_code == 200
        for path in ("/metrics", "/metrics?x=1"):
            assert requests.get(base + path, timeout=2).status_code == 404
        assert [r.path for r in node.requests] == ["/healthz"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        node.stop()


def test_it_keeps_query_strings_out_of_the_access_log():
    """GET postbacks carry the advertiser's token in the query string: the log format names
    the path ($uri), never the request line or the arguments."""
    config = (DEPLOY / "nginx" / "roundtrip.conf").read_text()
    log_format = config[config.index("log_format") : config.index("access_log")]
    assert "$uri" in log_format
    for leaky in ('$request"', "$request ", "$args", "$query_string", "$request_uri"):
        assert leaky not in log_format, leaky
    assert "access_log /var/log/nginx/roundtrip-access.log roundtrip_json" in config


def test_env_example_documents_every_variable_the_settings_read():
    """README: `.env.example` documents every variable. A setting read from the environment
    but missing there is one nobody can find; one listed there but never read is a lie."""
    settings_text = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', settings_text))
    read |= set(re.findall(r'"([A-Z][A-Z0-9_]*)" (?:not )?in env\b', settings_text))
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^# ?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert sorted(read - listed) == []
    assert sorted(listed - read) == []
