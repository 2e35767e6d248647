"""What each source scheme needs on the device, so `deploy` can check it before anything is uploaded.

`[device]` brings pyserial (serial://, socket://, a pty path) and numpy (replay://, synth://); microphones and
cameras need engines of their own, installed separately: they are large (OpenCV) or need a system library
(PortAudio), and a Jetson's OpenCV comes from JetPack.
"""

from __future__ import annotations

from dataclasses import dataclass

# scheme -> (module to import, what to install when it is missing)
MODULES = {
    "audio": ("sounddevice", "pip install 'edge-gmm[audio]' (and apt install libportaudio2)"),
    "camera": ("cv2", "pip install 'edge-gmm[camera]' (on a Jetson: use JetPack's OpenCV, which has GStreamer)"),
    "gstreamer": ("cv2", "JetPack's OpenCV (python3-opencv, built with GStreamer); pip's opencv has no GStreamer"),
}


@dataclass
class Need:
    uri: str
    module: str = ""  # a module the source imports ("" when [device] has it)
    install: str = ""
    path: str = ""  # a device node it opens (a serial port); it may be unplugged at deploy time


def source_needs(sources: str, sensors) -> list[Need]:
    """The needs of every source in `sources` (a sources file or one URI, as `run --sources` takes)."""
    from edge_gmm.devices.sources_file import load_sources

    out = []
    for spec in load_sources(sources, sensors).specs:
        module, install = MODULES.get(spec.scheme, ("", ""))
        path = spec.target if spec.scheme == "serial" and spec.target.startswith("/") else ""
        if module or path:
            out.append(Need(spec.uri, module, install, path))
    return out
