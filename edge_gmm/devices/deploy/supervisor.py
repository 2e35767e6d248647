"""A small process supervisor for boxes without systemd (`deploy --no-systemd`), run on the device.

    python -m edge_gmm.devices.deploy.supervisor start|stop|restart|status --run-dir DIR [--name N]
        [--env-file F] [--log F] [--restart-delay S] [--restart-max-delay S] -- COMMAND ARGS...

It behaves like the systemd unit deploy installs, so the two paths are interchangeable:
- daemonizes (double fork, new session; stdin from /dev/null, output appended to --log) and records its pid
  in DIR/N.pid, so an ssh session that started it returns at once;
- reads KEY=VALUE lines from --env-file (secrets stay out of the command line and `ps`) and expands
  ${KEY} in the arguments, as systemd's EnvironmentFile + ExecStart do;
- exit codes as errors.py defines them: 0 is a deliberate end (e.g. --max-seconds): state `exited`, no
  restart; 2 a user error (bad bundle, bad sources) a restart cannot fix: state `failed`, no restart
  (RestartPreventExitStatus=2); anything else (75 a restartable runtime failure, 1 a bug, a signal) is
  restarted with backoff, 5 s doubling to 60 s (RestartSec, RestartSteps, RestartMaxDelaySec), back to 5 s
  after a run that lasted 60 s; it never gives up for good (StartLimitIntervalSec=0): a full disk or a
  lost device node may clear hours later;
- SIGTERM is forwarded to the command, which gets 15 s to shut down cleanly before SIGKILL;
- DIR/N.json holds the state (`running`, `failed`, `stopped`, ...), restarts and the last exit code:
  `status` prints it and exits 0 only while the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

RESTART_DELAY_S = 5.0  # the first restart's delay; doubled per failure in a row ...
RESTART_MAX_DELAY_S = 60.0  # ... up to this; a run that lasted this long resets it
STOP_TIMEOUT_S = 15.0
EXIT_CLEAN = 0  # the codes of errors.py (not imported: the supervisor runs without the package's deps)
NO_RESTART_EXIT = 2
LOG_ROTATE_BYTES = 10 * 1024 * 1024
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_env_file(path: str | None) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments and blank lines skipped; one pair of surrounding quotes removed."""
    env: dict[str, str] = {}
    if not path:
        return env
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def expand(argv: list[str], env: dict[str, str]) -> list[str]:
    """${VAR} -> its value (one argument stays one argument, as in systemd); unknown variables become ''."""
    return [_VAR.sub(lambda m: env.get(m[1], ""), a) for a in argv]


class Paths:
    def __init__(self, run_dir: str, name: str):
        self.dir = Path(run_dir).absolute()  # the daemon chdirs to /
        self.pid = self.dir / f"{name}.pid"
        self.state = self.dir / f"{name}.json"


def _alive_supervisor(pid: int) -> bool:
    """Whether `pid` is a running supervisor (not a recycled pid of some other program)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and b"edge_gmm.devices.deploy.supervisor" in cmdline


def read_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive_supervisor(pid) else None


def read_state(paths: Paths) -> dict:
    try:
        state = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        state = {"state": "inactive"}
    pid = read_pid(paths)
    if pid is None and state.get("state") in ("starting", "running", "restarting"):
        state["state"] = "dead"  # the supervisor itself was killed (e.g. SIGKILL, reboot)
    state["supervisor_pid"] = pid
    return state


def _raw_state(paths: Paths) -> str:
    try:
        return json.loads(paths.state.read_text()).get("state", "")
    except (OSError, ValueError):
        return ""


def _write_state(paths: Paths, **state) -> None:
    tmp = paths.state.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**state, "updated": time.time()}))
    os.replace(tmp, paths.state)


# ---------------------------------------------------------------- the daemon


def _outcome(code: int) -> str | None:
    """The final state for an exit code that is not restarted, else None."""
    return {EXIT_CLEAN: "exited", NO_RESTART_EXIT: "failed"}.get(code)


def _next_delay(delay: float, ran_s: float, first: float, most: float) -> float:
    """Backoff: doubled per failure in a row, reset by a run that lasted `most` seconds (a healthy stretch)."""
    return first if ran_s >= most else min(delay * 2, most)


def _supervise(paths: Paths, argv: list[str], env_file: str | None, log_path: Path,
               first_delay: float = RESTART_DELAY_S, max_delay: float = RESTART_MAX_DELAY_S) -> int:
    stopping = {"flag": False, "since": 0.0}
    child: dict[str, subprocess.Popen | None] = {"p": None}

    def on_term(signum, frame):
        stopping["flag"], stopping["since"] = True, time.monotonic()
        p = child["p"]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    restarts, last_exit, state, delay = 0, None, "stopped", first_delay / 2  # doubled before the first wait
    while not stopping["flag"]:
        env = {**os.environ, **read_env_file(env_file)}
        cmd = expand(argv, env)
        if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        with open(log_path, "ab", buffering=0) as log:
            log.write(f"[supervisor] starting: {argv[0]} (start {restarts + 1})\n".encode())
            try:
                child["p"] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            except OSError as e:
                log.write(f"[supervisor] cannot start {cmd[0]}: {e}\n".encode())
                state, last_exit = "failed", 127
                break
        started = time.monotonic()
        _write_state(paths, state="running", pid=os.getpid(), child_pid=child["p"].pid, restarts=restarts, last_exit=last_exit)
        p = child["p"]
        while p.poll() is None:  # bounded: the child is killed STOP_TIMEOUT_S after a stop request
            time.sleep(0.1)
            if stopping["flag"] and time.monotonic() - stopping["since"] > STOP_TIMEOUT_S:
                p.kill()
        last_exit = p.returncode
        _log(log_path, f"[supervisor] command exited with code {last_exit}")
        if stopping["flag"]:
            state = "stopped"
            break
        final = _outcome(last_exit)
        if final is not None:
            state = final
            if last_exit == NO_RESTART_EXIT:
                _log(log_path, "[supervisor] exit code 2 is a configuration error: not restarting")
            break
        restarts += 1
        delay = _next_delay(delay, time.monotonic() - started, first_delay, max_delay)
        _log(log_path, f"[supervisor] restarting in {delay:g} s")
        _write_state(paths, state="restarting", pid=os.getpid(), child_pid=None, restarts=restarts,
                     last_exit=last_exit, next_start_s=delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stopping["flag"]:
            time.sleep(0.1)
    _write_state(paths, state=state, pid=None, child_pid=None, restarts=restarts, last_exit=last_exit)
    try:
        paths.pid.unlink()
    except OSError:
        pass
    return 0


def _log(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def start(paths: Paths, argv: list[str], env_file: str | None, log_path: Path, delays: tuple[float, float]) -> int:
    if read_pid(paths):
        print(json.dumps(read_state(paths)))
        return 0
    if not argv:
        print("supervisor: no command given after --", file=sys.stderr)
        return 2
    paths.dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    paths.pid.unlink(missing_ok=True)
    _write_state(paths, state="starting", pid=None, child_pid=None, restarts=0, last_exit=None)
    if os.fork() > 0:  # the caller: wait (bounded) until the daemon has started the command (or given up)
        # not just for the pid file: the daemon writes it before it reads the env file and starts the command,
        # and a caller that returned then would report `starting` with no child pid (a loaded box shows it)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _raw_state(paths) == "starting":
            time.sleep(0.05)
        state = read_state(paths)
        print(json.dumps(state))
        return 1 if state["state"] in ("starting", "dead") else 0
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    # the daemon: detach from the ssh session's descriptors so the session can end
    devnull = os.open(os.devnull, os.O_RDONLY)
    logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    os.chdir("/")
    paths.pid.write_text(str(os.getpid()))
    try:
        code = _supervise(paths, argv, env_file, log_path, *delays)
    finally:
        os._exit(0)
    return code  # pragma: no cover


def stop(paths: Paths, timeout: float = STOP_TIMEOUT_S + 5) -> int:
    pid = read_pid(paths)
    if pid is None:
        print(json.dumps(read_state(paths)))
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive_supervisor(pid):
        time.sleep(0.05)
    if _alive_supervisor(pid):
        os.kill(pid, signal.SIGKILL)
    print(json.dumps(read_state(paths)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m edge_gmm.devices.deploy.supervisor")
    p.add_argument("action", choices=["start", "stop", "restart", "status"])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--name", default="edge-gmm")
    p.add_argument("--env-file")
    p.add_argument("--log")
    p.add_argument("--restart-delay", type=float, default=RESTART_DELAY_S, help="seconds before the first restart")
    p.add_argument("--restart-max-delay", type=float, default=RESTART_MAX_DELAY_S, help="the backoff's ceiling")
    args = p.parse_args(argv)
    if not 0 < args.restart_delay <= args.restart_max_delay:
        p.error("need 0 < --restart-delay <= --restart-max-delay")
    paths = Paths(args.run_dir, args.name)
    log_path = Path(args.log or paths.dir / f"{args.name}.log").absolute()
    env_file = str(Path(args.env_file).absolute()) if args.env_file else None
    if args.action == "status":
        state = read_state(paths)
        print(json.dumps(state))
        return 0 if state.get("supervisor_pid") else 3
    if args.action == "stop":
        return stop(paths)
    if args.action == "restart":
        stop(paths)
    return start(paths, command, env_file, log_path, (args.restart_delay, args.restart_max_delay))


if __name__ == "__main__":
    sys.exit(main())
