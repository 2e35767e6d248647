"""Deploy a bundle to a device over SSH: verify on the device, switch atomically, run as a service, roll back.

`deploy(DeployOptions(...))` is what `edge-gmm deploy` calls; the steps live in deployer.py, the ssh transport
in ssh.py, the on-device probe and layout in remote.py, the service files in unit.py, the `--no-systemd`
supervisor in supervisor.py (it runs on the device) and the MQTT status watcher in status.py.
"""
