"""Rendering nginx.conf: paths quoted, unsafe values refused, workers sized to the CPUs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lfs_server import cpus, nginx_conf
from lfs_server.settings import Settings


def settings_for(data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"LFS_DATA_DIR": str(data_dir), **env})


def rendered(data_dir: Path, run_dir: Path | None = None, **env: str) -> str:
    run_dir = run_dir or data_dir.parent / "run"
    return nginx_conf.render(
        settings_for(data_dir, **env), run_dir, run_dir / "app" / "gunicorn.sock", "/dev/stdout"
    )


def directive(text: str, name: str) -> str:
    match = re.search(rf"^\s*{name} (.*);$", text, re.MULTILINE)
    assert match, f"no {name} in the config"
    return match.group(1)


def test_paths_are_quoted_and_escaped(tmp_path: Path) -> None:
    data_dir = tmp_path / 'a b;c{d}"e\\f'
    text = rendered(data_dir)
    quoted = str(data_dir).replace("\\", "\\\\").replace('"', '\\"')
    assert directive(text, "alias") == f'"{quoted}/objects/"'
    assert directive(text, "client_body_temp_path") == f'"{quoted}/tmp/uploads"'


@pytest.mark.parametrize("bad", ["new\nline", "carriage\rreturn", "tab\there", "nul\x7f"])
def test_control_characters_in_the_data_dir_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(nginx_conf.UnsafeValue, match=r"^LFS_DATA_DIR: control characters"):
        rendered(tmp_path / bad)


def test_a_dollar_is_refused_where_nginx_expands_variables(tmp_path: Path) -> None:
    with pytest.raises(nginx_conf.UnsafeValue, match=r"^LFS_DATA_DIR: a '\$' is not allowed"):
        rendered(tmp_path / "a$host")
    cert = tmp_path / "c$ert.pem"
    cert.write_text("x")
    with pytest.raises(nginx_conf.UnsafeValue, match=r"^LFS_TLS_CERT: a '\$'"):
        rendered(tmp_path / "data", LFS_TLS_CERT=str(cert), LFS_TLS_KEY=str(cert))


def test_a_dollar_stays_literal_where_nginx_takes_paths_as_they_are(tmp_path: Path) -> None:
    run_dir = tmp_path / "run $host"
    text = rendered(tmp_path / "data", run_dir)
    assert directive(text, "pid") == f'"{run_dir}/nginx.pid"'
    assert f'server "unix:{run_dir}/app/gunicorn.sock";' in text


def test_open_files_fit_the_connections(tmp_path: Path) -> None:
    text = rendered(tmp_path / "data")
    connections = int(directive(text, "worker_connections"))
    assert int(directive(text, "worker_rlimit_nofile")) >= 2 * connections
    assert int(directive(text, "worker_processes")) == cpus.available_cpus()


def fake_cgroup(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_line + "\n")
    root = tmp_path / "sys-fs-cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return proc, root


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(8)))


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", 8), ("100000 100000", 1), ("150000 100000", 2), ("20000 100000", 1)],
)
def test_cgroup_v2_quota_caps_the_cpus(tmp_path: Path, cpu_max: str, expected: int) -> None:
    proc, root = fake_cgroup(
        tmp_path,
        "0::/system.slice/lfs.service",
        {"cgroup.controllers": "cpu", "system.slice/lfs.service/cpu.max": cpu_max},
    )
    assert cpus.available_cpus(proc, root) == expected


@pytest.mark.usefixtures("eight_cpus")
def test_cgroup_v2_quota_of_a_parent_counts(tmp_path: Path) -> None:
    proc, root = fake_cgroup(
        tmp_path,
        "0::/machine/app",
        {
            "cgroup.controllers": "cpu",
            "machine/cpu.max": "300000 100000",
            "machine/app/cpu.max": "max 100000",
        },
    )
    assert cpus.available_cpus(proc, root) == 3


@pytest.mark.usefixtures("eight_cpus")
def test_cgroup_v2_in_a_container_reads_its_own_root(tmp_path: Path) -> None:
    # The path names the host's hierarchy; the container sees its own cgroup at the mount.
    proc, root = fake_cgroup(
        tmp_path, "0::/docker/abc123", {"cgroup.controllers": "cpu", "cpu.max": "200000 100000"}
    )
    assert cpus.available_cpus(proc, root) == 2


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(("quota", "expected"), [("-1", 8), ("400000", 4), ("50000", 1)])
def test_cgroup_v1_cfs_quota_caps_the_cpus(tmp_path: Path, quota: str, expected: int) -> None:
    proc, root = fake_cgroup(
        tmp_path,
        "4:cpu,cpuacct:/docker/abc123\n0::/",
        {
            "cpu,cpuacct/docker/abc123/cpu.cfs_quota_us": quota,
            "cpu,cpuacct/docker/abc123/cpu.cfs_period_us": "100000",
        },
    )
    assert cpus.available_cpus(proc, root) == expected


def test_affinity_limits_without_a_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {3})
    assert cpus.available_cpus(tmp_path / "missing", tmp_path) == 1


def test_the_bucket_location_is_rendered_only_for_the_s3_store(tmp_path: Path) -> None:
    local = rendered(tmp_path / "local")
    assert "/.lfs-internal/s3/" not in local
    assert "{{" not in local
    s3 = rendered(
        tmp_path / "s3",
        LFS_STORE="s3",
        LFS_S3_BUCKET="lfs-objects",
        LFS_S3_ENDPOINT="http://127.0.0.1:9000",
    )
    assert "location ^~ /.lfs-internal/s3/ {" in s3
    assert "server 127.0.0.1:9000;" in s3
    # Inside the server block, before the catch-all that hides /.lfs-internal/.
    assert s3.index("/.lfs-internal/s3/") < s3.index("location ^~ /.lfs-internal/ {")
