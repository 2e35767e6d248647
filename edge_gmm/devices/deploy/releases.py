"""Deploy's release bookkeeping, one job: the release tree on the device.

    HOME/staging/R    an upload not yet verified there
    HOME/releases/R   verified releases; HOME/current and HOME/previous link to two of them
    HOME/trust/bundle.pub   the trusted key (installed with the switch, restored by a rollback)

A release `current` or `previous` points to is never deleted. The Deployer (deployer.py) decides when; this
class only knows how, over a transport.
"""

from __future__ import annotations

from edge_gmm.devices.deploy.remote import Layout, q, switch_link


class ReleaseStore:
    def __init__(self, transport, layout: Layout, facts: dict):
        self.t, self.layout = transport, layout
        self.current, self.previous = facts.get("current"), facts.get("previous")  # as found: "releases/R" or None
        self.releases = list(facts.get("releases", []))
        self.trust_key = facts.get("trust_key")  # the installed key's text, or None
        self.key_installed = False

    def in_use(self, release: str) -> bool:
        return f"releases/{release}" in (self.current, self.previous)

    # ------------------------------------------------------------ upload, verify, discard
    def upload(self, root, release: str, files: list) -> bool:
        """Put the bundle under staging/R; False when releases/R is already there (equal name = equal bytes)."""
        if release in self.releases:
            return False
        self.t.put_tree(root, self.layout.staging(release), files)
        return True

    def promote(self, release: str) -> None:
        """staging/R -> releases/R, once the device verified it."""
        self.t.run(
            f"mkdir -p {q(self.layout.home + '/releases')} && mv -T {q(self.layout.staging(release))} {q(self.layout.release(release))}",
            what="move verified release into place",
        )

    def discard(self, where: str, what: str) -> None:
        self.t.run(f"rm -rf {q(where)}", check=False, what=what)

    # ------------------------------------------------------------ switch and back
    def switch(self, release: str) -> bool:
        """current -> releases/R (previous -> the old current); False when it already pointed there."""
        rel = f"releases/{release}"
        if self.current == rel:
            return False
        cmds = [switch_link(self.layout.home, "previous", self.current)] if self.current else []
        cmds.append(switch_link(self.layout.home, "current", rel))
        self.t.run(" && ".join(cmds), what="switch current")
        return True

    def switch_back(self) -> None:
        """current and previous as they were found."""
        cmds = [switch_link(self.layout.home, "current", self.current)]
        cmds.append(switch_link(self.layout.home, "previous", self.previous) if self.previous else f"rm -f {q(self.layout.previous)}")
        self.t.run(" && ".join(cmds), what="rollback switch")

    def remove_current(self) -> None:
        self.t.run(f"rm -f {q(self.layout.current)}", check=False)

    # ------------------------------------------------------------ trusted key
    def install_key(self, pubkey: bytes | None) -> bool:
        """`pubkey` (when it differs from the installed one) becomes the device's trusted key: from then on every
        `edge-gmm run` there requires a signature. Deploy never removes a key."""
        self.key_installed = pubkey is not None and (self.trust_key or "").encode() != pubkey
        if self.key_installed:
            self.t.put_bytes(pubkey, self.layout.trusted_key)
        return self.key_installed

    def restore_key(self) -> None:
        """Rollback: the old release must start under the key it was verified with (or none)."""
        if not self.key_installed:
            return
        if self.trust_key is not None:
            self.t.put_bytes(self.trust_key.encode(), self.layout.trusted_key)
        else:
            self.t.run(f"rm -f {q(self.layout.trusted_key)}", check=False, what="remove the new trusted key")
