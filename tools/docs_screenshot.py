"""Render ``/docs`` and ``/redoc`` in a real browser with no other host reachable.

Starts ``meterd api`` on the embedded default (SQLite and an embedded Redis, in a
scratch directory) and points headless Chromium (Debian's ``chromium``) at its
``/docs`` and ``/redoc``, then checks what the browser drew:

* the DOM after the scripts ran (``--dump-dom``): Swagger UI lists every operation
  of ``/openapi.json`` and shows its "Authorize" button; ReDoc lists them too;
* the screenshot (``--screenshot``) is not a blank page: with Pillow, it has many
  colours and a fair share of non-white pixels; without it, its PNG is not tiny.

No other host is reachable: as root (or where user namespaces are allowed) the
server and the browser run in a network namespace of their own whose only
interface is loopback (``unshare --net``); in any case Chromium resolves no name
but loopback and sends everything else to a proxy that is not there.

    python tools/docs_screenshot.py [--out-dir DIR]

Exit 0 when both pages render; 1 with what is missing otherwise. Needs
``chromium`` (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

INSIDE = "--inside-namespace"
#: Chromium resolves only loopback and sends anything else to a closed port.
NO_OTHER_HOST = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>;127.0.0.1;localhost",
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2000",
    "--virtual-time-budget=20000",
    *NO_OTHER_HOST,
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def meterd_api(workdir: Path, port: int) -> Iterator[str]:
    """``meterd api`` on the embedded default (a new database in ``workdir``); its URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERD_")}
    log = (workdir / "api.log").open("w")
    command = [sys.executable, "-m", "meterd.cli"]
    subprocess.run([*command, "db", "upgrade"], cwd=workdir, env=env, stdout=log, check=True)
    proc = subprocess.Popen(
        [*command, "api", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(base + "/healthz"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"meterd api did not start:\n{(workdir / 'api.log').read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("chromium is not installed (apt-get install -y chromium)")
    return subprocess.run(
        [executable, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=120
    )


def not_blank(png: Path) -> tuple[bool, str]:
    """Whether the screenshot shows something, and how that was judged."""
    try:
        from PIL import Image
    except ImportError:
        size = png.stat().st_size
        return size > 30_000, f"{size} bytes (Pillow missing: judged by size)"
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        pixels = rgb.width * rgb.height
        white = sum(n for n, c in colours if isinstance(c, tuple) and min(c) >= 250)
    inked = 1 - white / pixels
    return len(colours) >= 50 and inked >= 0.05, f"{len(colours)} colours, {inked:.0%} not white"


def check_page(base: str, page: str, out_dir: Path, operations: int) -> list[str]:
    """What is missing from ``page`` as the browser drew it (empty: all is there)."""
    problems = []
    dom = chromium("--dump-dom", base + page).stdout
    (out_dir / f"{page.strip('/')}.html").write_text(dom)
    if page == "/docs":
        # an operation with two tags (/metrics) is drawn under each
        drawn = len(re.findall(r'class="opblock opblock-', dom))
        if drawn < operations:
            problems.append(f"/docs drew {drawn} of {operations} operations")
        if 'class="btn authorize' not in dom:
            problems.append("/docs has no Authorize button")
    else:
        drawn = len(re.findall(r'class="[^"]*\boperation-type (?:get|post|patch|delete)"', dom))
        if drawn < operations:
            problems.append(f"/redoc lists {drawn} of {operations} operations")
    png = out_dir / f"{page.strip('/')}.png"
    chromium(f"--screenshot={png}", base + page)
    if not png.exists():
        return [*problems, f"{page}: chromium wrote no screenshot"]
    shows, how = not_blank(png)
    print(f"{page}: {drawn} operation blocks for {operations} operations; screenshot {png} ({how})")
    if not shows:
        problems.append(f"{page}: the screenshot is blank ({how})")
    return problems


def run(out_dir: Path, isolated: str) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"network: {isolated}")
    with (
        tempfile.TemporaryDirectory(prefix="meterd-docs-") as scratch,
        meterd_api(Path(scratch), free_port()) as base,
    ):
        spec = httpx.get(base + "/openapi.json").json()
        operations = sum(len(ops) for ops in spec["paths"].values())
        problems = [
            p for page in ("/docs", "/redoc") for p in check_page(base, page, out_dir, operations)
        ]
    for problem in problems:
        print("FAIL:", problem)
    print("ok: /docs and /redoc render offline" if not problems else "failed")
    return 1 if problems else 0


def in_own_namespace(argv: list[str]) -> int | None:
    """Run this script again in a network namespace with loopback only; None when
    namespaces are not allowed here."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if unshare is None or ip is None:
        return None
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = f'{ip} link set lo up && exec "$@"'
    command = [unshare, "--net", *user, "sh", "-c", script, "sh", sys.executable, __file__]
    probe = subprocess.run([unshare, "--net", *user, "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    return subprocess.call([*command, *argv, INSIDE])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(tempfile.gettempdir()) / "meterd-docs")
    parser.add_argument("--no-namespace", action="store_true", help="only Chromium's own rules")
    parser.add_argument(INSIDE, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside_namespace:
        return run(args.out_dir, "own network namespace, loopback only, and Chromium's rules")
    if not args.no_namespace:
        argv = ["--out-dir", str(args.out_dir)]
        code = in_own_namespace(argv)
        if code is not None:
            return code
    return run(args.out_dir, "Chromium's rules only (no network namespace here)")


if __name__ == "__main__":
    sys.exit(main())
