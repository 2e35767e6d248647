"""What deploy runs on the device: the probe script, the remote directory layout, and shell command builders.

The probe is plain Python piped to the device's interpreter (`python3 - ARGS`), so it works before edge-gmm
is installed there; it prints one JSON object with what the later steps decide on.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# argv: [home or "", service name, mode ("systemd" | "supervisor"), JSON {"modules": [...], "paths": [...]}]
# (the modules and device nodes the sources file needs: devices/sources/needs.py)
PROBE_SCRIPT = r'''
import json, os, platform, shutil, subprocess, sys, getpass
home_arg, service, mode = sys.argv[1], sys.argv[2], sys.argv[3]
needs = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
home = os.path.abspath(os.path.expanduser(home_arg or os.environ.get("EDGE_GMM_HOME") or "~/edge-gmm"))
info = {"arch": platform.machine(), "python": platform.python_version(), "executable": sys.executable,
        "home": home, "user": getpass.getuser(), "root": os.geteuid() == 0, "hostname": platform.node(),
        "sudo": bool(shutil.which("sudo")), "systemd": os.path.isdir("/run/systemd/system"),
        "tegrastats": bool(shutil.which("tegrastats"))}
probe = home
while not os.path.exists(probe):
    probe = os.path.dirname(probe)
info["disk_free_mb"] = shutil.disk_usage(probe).free // (1 << 20)
try:
    import edge_gmm
    info["edge_gmm"] = edge_gmm.__version__
except Exception:
    info["edge_gmm"] = None
# the console script pip made: next to the interpreter (venv), in ~/.local/bin (--user), or on PATH
candidates = [os.path.join(os.path.dirname(sys.executable), "edge-gmm"), os.path.expanduser("~/.local/bin/edge-gmm"),
              shutil.which("edge-gmm") or ""]
info["edge_gmm_cli"] = next((c for c in candidates if c and os.access(c, os.X_OK)), None) if info["edge_gmm"] else None
try:
    first = open("/etc/nv_tegra_release").readline()  # "# R36 (release), REVISION: 4.3, ..."
    major = first.split("R", 1)[1].split()[0]
    rev = first.split("REVISION:", 1)[1].split(",")[0].strip()
    info["l4t"] = major + "." + rev
except Exception:
    info["l4t"] = None
try:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True, text=True, timeout=10)
    info["jetpack"] = (out.stdout.split("-")[0] or None) if out.returncode == 0 else None
except Exception:
    info["jetpack"] = None
try:
    import tensorrt
    info["tensorrt"] = tensorrt.__version__
except Exception:
    info["tensorrt"] = None
def link(name):
    try:
        return os.readlink(os.path.join(home, name))
    except OSError:
        return None
info["current"], info["previous"] = link("current"), link("previous")
try:
    info["releases"] = sorted(os.listdir(os.path.join(home, "releases")))
except OSError:
    info["releases"] = []
try:
    info["deployed"] = json.load(open(os.path.join(home, "state", "deployed.json")))
except Exception:
    info["deployed"] = None
try:  # the trusted key deploy --pubkey installed (a rollback restores it)
    info["trust_key"] = open(os.path.join(home, "trust", "bundle.pub")).read()
except Exception:
    info["trust_key"] = None
state = "inactive"
if mode == "systemd" and info["systemd"]:
    out = subprocess.run(["systemctl", "is-active", service], capture_output=True, text=True, timeout=10)
    state = out.stdout.strip() or "inactive"
elif info["edge_gmm"]:
    try:
        from edge_gmm.devices.deploy.supervisor import Paths, read_state
        state = read_state(Paths(os.path.join(home, "run"), service)).get("state", "inactive")
    except Exception as e:
        state = "unknown (%s)" % e
info["service_state"] = state
info["imports"] = {}  # module -> None when it imports, else the error (an import also loads PortAudio's library)
for module in needs.get("modules", []):
    try:
        __import__(module)
        info["imports"][module] = None
    except Exception as e:
        info["imports"][module] = "%s: %s" % (type(e).__name__, e)
info["paths"] = {p: os.path.exists(p) for p in needs.get("paths", [])}
print(json.dumps(info))
'''


@dataclass(frozen=True)
class Layout:
    """The remote tree under the base directory (EDGE_GMM_HOME, default ~/edge-gmm)."""

    home: str
    service: str = "edge-gmm"

    def release(self, name: str) -> str:
        return f"{self.home}/releases/{name}"

    def staging(self, name: str) -> str:
        return f"{self.home}/staging/{name}"

    @property
    def current(self) -> str:
        return f"{self.home}/current"

    @property
    def previous(self) -> str:
        return f"{self.home}/previous"

    @property
    def config(self) -> str:
        return f"{self.home}/config"

    @property
    def run_dir(self) -> str:
        return f"{self.home}/run"

    @property
    def log(self) -> str:
        return f"{self.home}/logs/{self.service}.log"

    @property
    def trusted_key(self) -> str:
        """The device's trusted public key: while it exists, `edge-gmm run` refuses unsigned bundles (runtime/bundle.py)."""
        return f"{self.home}/trust/bundle.pub"

    @property
    def deployed_state(self) -> str:
        return f"{self.home}/state/deployed.json"

    @property
    def wheels(self) -> str:
        return f"{self.home}/wheels"


def q(s: str) -> str:
    return shlex.quote(s)


def switch_link(home: str, link: str, target_rel: str) -> str:
    """Point HOME/link at target_rel atomically: a new symlink renamed over the old one (rename(2) is atomic)."""
    tmp = f"{home}/.{link}.tmp"
    return f"ln -sfn {q(target_rel)} {q(tmp)} && mv -T {q(tmp)} {q(f'{home}/{link}')}"


def python_module(python: str, module: str, *args: str) -> str:
    return " ".join([q(python), "-m", module, *(q(a) for a in args)])


def edge_gmm_cli(cli: str, *args: str) -> str:
    """A command line of the device's `edge-gmm` console script."""
    return " ".join([q(cli), *(q(a) for a in args)])
