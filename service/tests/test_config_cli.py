"""Server configuration errors and the CLI's settings (file, environment, flags), without a server."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from pvesan_service import cli, config


def test_config_yaml_toml_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("PVESAN_ADMIN_TOKEN", raising=False)
    y = tmp_path / "s.yaml"
    y.write_text("listen: 127.0.0.1:9443\ninsecure_http: true\nadmin_token: %s\n" % ("a" * 30))
    cfg = config.load(str(y))
    assert (cfg["host"], cfg["port"], cfg["database"]) == ("127.0.0.1", 9443, "sqlite:////var/lib/pvesan/state.db")
    t = tmp_path / "s.toml"
    t.write_text('listen = "[::1]:8443"\ntls_cert = "/c"\ntls_key = "/k"\n')
    assert config.load(str(t))["host"] == "::1"
    for text, msg in [("bogus: 1\n", "unknown setting"), ("listen: nope\ninsecure_http: true\n", "HOST:PORT"),
                      ("tls_cert: /c\n", "both tls_cert and tls_key"), ("{}\n", "TLS is required"),
                      ("insecure_http: true\nadmin_token: short\n", "too short"), ("- a\n", "mapping"),
                      ("insecure_http: true\ntarget: {}\n", "driver")]:
        y.write_text(text)
        with pytest.raises(config.ConfigError, match=msg):
            config.load(str(y))
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "missing.yaml"))


def test_the_documented_configuration_loads(tmp_path):
    """The example of docs/service.md ("Server configuration") is a valid configuration."""
    import os
    import re
    import yaml
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "service.md")).read()
    section = doc[doc.index("## Server configuration"):]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    example.pop("admin_token_file")
    example["admin_token"] = "a" * 30  # the documented file does not exist here
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(example))
    cfg = config.load(str(path))
    assert cfg["http_limits"].request_timeout == 10 and cfg["secret_key_file"] == "/etc/pvesan/secret.key"


@pytest.mark.parametrize("http, msg", [({"request_timout": 5}, "mapping of"), ({"request_timeout": 0}, "positive"),
                                       ({"max_connections": 1.5}, "integer"), ({"keepalive_timeout": True}, "positive")])
def test_bad_http_limits_are_refused(tmp_path, http, msg):
    import yaml
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"insecure_http": True, "http": http}))
    with pytest.raises(config.ConfigError, match=msg):
        config.load(str(path))


def test_server_exits_2_on_bad_config(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("bogus: 1\n")
    r = subprocess.run([sys.executable, "-m", "pvesan_service.server", "-c", str(y)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and "unknown setting" in r.stderr


def test_cli_settings_precedence(tmp_path, monkeypatch):
    for env in cli.ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.delenv("PVESAN_CONFIG", raising=False)
    conf = tmp_path / "client.toml"
    tok = tmp_path / "token"
    tok.write_text("pvs_file_token\n")
    conf.write_text('api_url = "https://file:8443"\ntoken_file = "%s"\nssl_verify = false\ntenant = "t1"\n' % tok)
    args = cli.parser().parse_args(["--config", str(conf), "volume", "list"])
    s = cli.load_settings(args)
    assert (s["api_url"], s["token"], s["ssl_verify"], s["tenant"]) == ("https://file:8443", "pvs_file_token", False, "t1")
    monkeypatch.setenv("PVESAN_API_URL", "https://env:8443")
    monkeypatch.setenv("PVESAN_TOKEN", "pvs_env")
    args = cli.parser().parse_args(["--config", str(conf), "--api-url", "https://flag:1", "volume", "list"])
    s = cli.load_settings(args)
    assert (s["api_url"], s["token"]) == ("https://flag:1", "pvs_env")
    conf.write_text("nope = 1\n")
    with pytest.raises(cli.CliError) as err:
        cli.load_settings(cli.parser().parse_args(["--config", str(conf), "health"]))
    assert err.value.code == cli.EXIT_USAGE


def test_cli_usage_errors_are_json_with_exit_2(tmp_path, monkeypatch):
    for env in cli.ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("PVESAN_CONFIG", str(tmp_path / "none.toml"))
    env = {"PATH": "/usr/bin:/bin", "PVESAN_CONFIG": str(tmp_path / "none.toml")}
    r = subprocess.run([sys.executable, "-m", "pvesan_service.cli", "--json", "health"], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["message"].startswith("cannot read config")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    env["PVESAN_CONFIG"] = str(empty)
    r = subprocess.run([sys.executable, "-m", "pvesan_service.cli", "--json", "health"], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode == 2 and "no API URL" in json.loads(r.stdout)["error"]["message"]


def test_target_write_through(tmp_path):
    """target: {driver: tgt, write_through: true} reaches the driver (as server.build passes it);
    anything but a boolean is refused with the setting's name."""
    from pvesan_service.targets import make_target_driver
    path = tmp_path / "s.yaml"
    path.write_text("insecure_http: true\ntarget: {driver: tgt, write_through: true}\n")
    options = dict(config.load(str(path))["target"])
    driver = make_target_driver(options.pop("driver"), **options)
    assert driver.write_through is True and driver.bsoflags == "sync"
    path.write_text("insecure_http: true\ntarget: {driver: lio, write_through: false}\n")
    options = dict(config.load(str(path))["target"])
    assert make_target_driver(options.pop("driver"), **options).write_through is False
    for value in ('"yes"', "1", '"true"', "null"):
        path.write_text("insecure_http: true\ntarget: {driver: tgt, write_through: %s}\n" % value)
        with pytest.raises(config.ConfigError, match="target.write_through must be true or false"):
            config.load(str(path))


@pytest.mark.skipif(not shutil.which("ansible-playbook"), reason="needs ansible-core")
@pytest.mark.parametrize("cluster_managed", [False, True])
def test_the_roles_service_config_loads_write_through_in_an_ha_pair(tmp_path, monkeypatch, cluster_managed):
    """roles/volume_service's service.yaml.j2, rendered by Ansible with the role's defaults, is a
    configuration the service loads, and its exports are write-through exactly on HA heads; a file
    pool on its own filesystem must be mounted (require_mount), a plain directory need not."""
    import json
    import os
    import yaml
    role = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles", "volume_service")
    out = tmp_path / "service.yaml"
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "vars_files": [os.path.join(role, "defaults", "main.yml")],
        "tasks": [{"ansible.builtin.template": {"src": os.path.join(role, "templates", "service.yaml.j2"),
                                                "dest": str(out), "mode": "0600"}}]}]))
    r = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook),
                        "-e", "ansible_python_interpreter=%s" % sys.executable,
                        "-e", "volume_service_cluster_managed=%s" % str(cluster_managed).lower(),
                        "-e", json.dumps({"volume_service_pools": [
                            {"name": "plain", "kind": "file", "path": "/srv/pvesan/plain"},
                            {"name": "own", "kind": "file", "path": "/srv/pvesan/own", "filesystem": "xfs", "device": "/dev/sdb"}]})],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    monkeypatch.setenv("PVESAN_ADMIN_TOKEN", "a" * 30)  # the role's token file does not exist here
    cfg = config.load(str(out))
    assert cfg["target"] == {"driver": "tgt", "write_through": cluster_managed}
    assert [p["options"] for p in cfg["pools"]] == [{"path": "/srv/pvesan/plain"}, {"path": "/srv/pvesan/own", "require_mount": True}]
