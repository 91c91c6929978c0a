"""`make run`: prepare the embedded defaults and run web + Celery worker + beat together.

Migrates, loads the default data, then starts the three processes, each in its own
process group. One Ctrl-C (SIGINT) or SIGTERM stops all three and their children; if
one of them dies, the others are stopped too and the exit code is non-zero.

Usage: python -m traversion_site.run [--bind 127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 10

#: Management commands run before the processes start, in order.
SETUP_COMMANDS: list[list[str]] = [
    ["migrate", "--noinput"],
    ["bootstrap_demo"],
    # The default rule pack and the .env default channels (idempotent).
    ["load_default_rules"],
]


def prepare_environment(var_dir: Path) -> None:
    var_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("broker/queue", "broker/processed", "broker/control", "cache", "static"):
        (var_dir / sub).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traversion_site.settings")
    if not os.environ.get("SECRET_KEY"):
        key_file = var_dir / "secret_key"
        if not key_file.is_file():
            key_file.write_text(secrets.token_urlsafe(50) + "\n")
            key_file.chmod(0o600)
        os.environ["SECRET_KEY"] = key_file.read_text().strip()


def prepare_metrics_dir(var_dir: Path) -> Path:
    """A fresh prometheus_client multiprocess directory shared by web, worker and beat.

    Every process writes its samples there and the web `/metrics` merges them, so the
    counters add up across gunicorn workers and Celery pool processes (docs/metrics.md).
    Wiped at each start: files of a previous run would be counted again.
    """
    metrics_dir = var_dir / "prometheus-multiproc"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    return metrics_dir


def process_specs(bind: str) -> dict[str, list[str]]:
    python = sys.executable
    bin_dir = Path(python).parent
    return {
        "web": [
            str(bin_dir / "gunicorn"),
            # ASGI (uvicorn workers): HTTP and the live board's WebSocket on one port.
            "traversion_site.asgi:application",
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--config",
            str(BASE_DIR / "traversion_site" / "gunicorn.conf.py"),
            "--bind",
            bind,
            "--workers",
            os.environ.get("WEB_CONCURRENCY", "2"),
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "5",
        ],
        "worker": [
            str(bin_dir / "celery"),
            "-A",
            "traversion_site",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            os.environ.get("WORKER_CONCURRENCY", "2"),
        ],
        "beat": [
            str(bin_dir / "celery"),
            "-A",
            "traversion_site",
            "beat",
            "--loglevel",
            "INFO",
        ],
    }


def admin_password(var_dir: Path) -> str:
    from django.conf import settings

    if settings.ADMIN_PASSWORD:
        return settings.ADMIN_PASSWORD
    return (var_dir / "admin-password").read_text().strip()


def check_configuration() -> str | None:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.DEBUG  # noqa: B018  (loading settings validates every variable)
    except ImproperlyConfigured as exc:
        return str(exc)
    return None


def run_setup() -> None:
    for command in SETUP_COMMANDS:
        subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), *command], check=True, cwd=BASE_DIR
        )


def stop_all(children: dict[str, subprocess.Popen]) -> None:
    # SIGTERM to each leader: gunicorn and Celery stop their own children gracefully.
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in children.values():
        try:  # the group may hold pool children even after the leader exited
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default=os.environ.get("WEB_BIND", "127.0.0.1:8000"))
    args = parser.parse_args(argv)

    var_dir = Path(os.environ.get("TRAVERSION_VAR_DIR", BASE_DIR / "var"))
    prepare_environment(var_dir)
    problem = check_configuration()
    if problem:
        print(f"Configuration error: {problem}", file=sys.stderr)
        return 2
    try:
        run_setup()
    except subprocess.CalledProcessError as exc:
        print(
            f"setup step failed: {' '.join(exc.cmd[2:])} (exit {exc.returncode})", file=sys.stderr
        )
        return exc.returncode or 1

    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    # Set for the three children only (they inherit it), after the setup commands.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_metrics_dir(var_dir))
    children = {
        name: subprocess.Popen(cmd, cwd=BASE_DIR, start_new_session=True)
        for name, cmd in process_specs(args.bind).items()
    }
    host = (
        args.bind
        if not args.bind.startswith("0.0.0.0")
        else args.bind.replace("0.0.0.0", "127.0.0.1")
    )
    password = admin_password(var_dir)
    print(
        f"\nTraversion is starting: web, worker and beat (pids "
        f"{', '.join(f'{n}={p.pid}' for n, p in children.items())}).\n"
        f"  Admin:   http://{host}/admin/   user: admin   password: {password}\n"
        f"  API:     http://{host}/api/docs/\n"
        f"  Live:    http://{host}/alerts/live/\n"
        f"  Health:  http://{host}/healthz   http://{host}/readyz\n"
        "Press Ctrl-C once to stop everything.\n",
        flush=True,
    )
    exit_code = 0
    while not stopping:
        for name, proc in children.items():
            if proc.poll() is not None:
                print(
                    f"{name} exited with code {proc.returncode}; stopping the others",
                    file=sys.stderr,
                )
                exit_code = proc.returncode or 1
                stopping = True
                break
        time.sleep(0.5)
    print("Stopping web, worker and beat...", flush=True)
    stop_all(children)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
