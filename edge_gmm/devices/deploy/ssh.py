"""Remote commands and file transfer over the system OpenSSH client (`ssh`, with tar over stdin for trees).

Why the system client: it honours the user's ~/.ssh/config, agents and known_hosts, and host-key checking is
OpenSSH's own. Every call is `ssh -o BatchMode=yes` (never prompts; a script cannot hang on a question) with
StrictHostKeyChecking=yes unless the user asked to accept a new key. One master connection (ControlMaster)
is shared by all commands of a deploy, so a step costs a round trip, not a handshake.

`DryRunTransport` has the same interface and only prints what would run and what would be written.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge_gmm.devices.deploy.target import SshTarget
from edge_gmm.errors import DeviceError, MissingDependencyError


@dataclass
class CommandResult:
    rc: int
    out: str
    err: str


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class SshTransport:
    """Runs shell commands on `target` and writes files there. Raises DeviceError with what to do."""

    dry_run = False

    def __init__(
        self,
        target: SshTarget,
        *,
        identity: str | None = None,
        known_hosts: str | None = None,
        accept_new_host_key: bool = False,
        connect_timeout: int = 10,
        log: Callable[[str], None] = print,
        verbose: bool = False,
    ):
        if shutil.which("ssh") is None:
            raise MissingDependencyError("the OpenSSH client `ssh` is not installed", hint="apt install openssh-client")
        self.target = target
        self.log = log
        self.verbose = verbose
        self.accept_new = accept_new_host_key
        self._control_dir = tempfile.mkdtemp(prefix="egssh-")  # short path: a unix socket path is limited to ~104 bytes
        opts = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "accept-new" if accept_new_host_key else "yes",
            "ConnectTimeout": str(connect_timeout),
            "ServerAliveInterval": "10",
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",
            "ControlMaster": "auto",
            "ControlPath": f"{self._control_dir}/%C",
            "ControlPersist": "120",
        }
        if known_hosts:
            opts["UserKnownHostsFile"] = str(Path(known_hosts).expanduser())
        if identity:
            if not Path(identity).expanduser().is_file():
                raise DeviceError(f"--identity {identity}: no such key file")
            opts["IdentitiesOnly"] = "yes"
        self.base = ["ssh", "-p", str(target.port)]
        if identity:
            self.base += ["-i", str(Path(identity).expanduser())]
        for k, v in opts.items():
            self.base += ["-o", f"{k}={v}"]
        self._connected = False

    # ------------------------------------------------------------ commands
    def connect(self) -> None:
        """Open the master connection; host-key and authentication problems surface here with a clear message."""
        if self._connected:
            return
        proc = subprocess.run([*self.base, self.target.destination, "true"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise self._connection_error(proc.stderr)
        self._connected = True

    def _connection_error(self, err: str) -> DeviceError:
        where = str(self.target)
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
            return DeviceError(
                f"{where}: the host key CHANGED since it was recorded in known_hosts; refusing to connect",
                hint="if the device was reinstalled, remove the old key with `ssh-keygen -R HOST` and check the new fingerprint",
            )
        if "Host key verification failed" in err or "host key is known" in err:
            return DeviceError(
                f"{where}: unknown host key (not in known_hosts); refusing to connect",
                hint="check the fingerprint with `ssh-keyscan -p PORT HOST | ssh-keygen -lf -` and rerun with "
                "--accept-new-host-key once (or add it to known_hosts yourself)",
            )
        if "Permission denied" in err:
            return DeviceError(
                f"{where}: authentication failed ({_tail(err, 1)})",
                hint="pass --identity KEY, or install your key with `ssh-copy-id USER@HOST`",
            )
        return DeviceError(f"{where}: cannot connect: {_tail(err, 2) or 'ssh failed'}", hint="is the device on and sshd running?")

    def run(
        self, command: str, *, input: bytes | None = None, check: bool = True, timeout: float = 300, what: str = ""
    ) -> CommandResult:
        self.connect()
        if self.verbose:
            self.log(f"    $ {command}" + (f"   # stdin: {len(input)} bytes" if input else ""))
        try:
            proc = subprocess.run(
                [*self.base, self.target.destination, command], input=input, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.target}: {what or 'remote command'} did not finish within {timeout:.0f} s: {command}") from None
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        if proc.returncode == 255 and not out:
            raise self._connection_error(err)
        if check and proc.returncode != 0:
            raise DeviceError(
                f"{self.target}: {what or 'remote command'} failed (exit {proc.returncode}): {_tail(err or out, 4)}",
                hint=f"the command was: {command}",
            )
        return CommandResult(proc.returncode, out, err)

    # ------------------------------------------------------------ files
    def put_bytes(self, data: bytes, remote_path: str, *, mode: int = 0o644, shown: str | None = None) -> None:
        """Write `data` to `remote_path` atomically (temp file + mv) with `mode`; umask 077 until chmod."""
        if self.verbose:
            self.log(f"    > write {remote_path} (mode {mode:04o}, {len(data)} bytes)")
        q = shlex.quote(remote_path)
        tmp = shlex.quote(remote_path + ".tmp")
        parent = shlex.quote(str(Path(remote_path).parent))
        self.run(
            f"mkdir -p {parent} && (umask 077 && cat > {tmp}) && chmod {mode:o} {tmp} && mv -f {tmp} {q}",
            input=data,
            what=f"writing {remote_path}",
        )

    def put_tree(self, local_dir: Path, remote_dir: str, files: list[Path] | None = None) -> None:
        """Copy `files` (default: every file below `local_dir`) into `remote_dir` with tar over ssh's stdin."""
        self.connect()
        files = files if files is not None else tree_files(local_dir)
        if self.verbose:
            self.log(f"    > upload {len(files)} files from {local_dir}/ -> {remote_dir}/ (tar over ssh)")
        q = shlex.quote(remote_dir)
        with tempfile.TemporaryFile() as errf:
            proc = subprocess.Popen(
                [*self.base, self.target.destination, f"rm -rf {q} && mkdir -p {q} && tar xf - -C {q}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errf,
            )
            assert proc.stdin
            try:
                with tarfile.open(fileobj=proc.stdin, mode="w|") as tf:
                    for f in files:
                        tf.add(f, arcname=str(f.relative_to(local_dir)))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = proc.wait(timeout=600)
            errf.seek(0)
            err = errf.read().decode(errors="replace")
        if rc != 0:
            raise DeviceError(f"{self.target}: upload to {remote_dir} failed (exit {rc}): {_tail(err, 3)}")

    def close(self) -> None:
        if self._connected:
            subprocess.run([*self.base, "-O", "exit", self.target.destination], capture_output=True, timeout=10)
            self._connected = False
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def describe(self) -> str:
        return shlex.join([*self.base[:3], self.target.destination])


class DryRunTransport:
    """Prints every command and file a deploy would run or write; connects to nothing."""

    dry_run = True

    def __init__(self, target: SshTarget, *, log: Callable[[str], None] = print, ssh_prefix: str = ""):
        self.target = target
        self.log = log
        self.ssh_prefix = ssh_prefix

    def connect(self) -> None:
        pass

    def run(self, command: str, *, input: bytes | None = None, check: bool = True, timeout: float = 300, what: str = "") -> CommandResult:
        suffix = f"   # stdin: {len(input)} bytes" if input else ""
        self.log(f"    $ {command}{suffix}")
        return CommandResult(0, "", "")

    def put_bytes(self, data: bytes, remote_path: str, *, mode: int = 0o644, shown: str | None = None) -> None:
        self.log(f"    > write {remote_path} (mode {mode:04o}, {len(data)} bytes)")
        text = shown if shown is not None else _printable(data)
        if text is not None:
            for line in text.rstrip("\n").splitlines():
                self.log(f"    |   {line}")

    def put_tree(self, local_dir: Path, remote_dir: str, files: list[Path] | None = None) -> None:
        self.log(f"    > upload {local_dir}/ -> {remote_dir}/ (tar over ssh)")
        for f in files if files is not None else tree_files(local_dir):
            self.log(f"    |   {f.relative_to(local_dir)} ({f.stat().st_size} bytes)")

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.ssh_prefix or f"ssh -p {self.target.port} {self.target.destination}"


def tree_files(local_dir: Path) -> list[Path]:
    return [f for f in sorted(Path(local_dir).rglob("*")) if f.is_file()]


def _printable(data: bytes) -> str | None:
    if len(data) > 8192:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\n\t" for c in text) else None

