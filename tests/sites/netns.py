"""Network namespaces for the outbound-only site tests (Linux, root, `ip` and `iptables`).

Each site's agent and client processes run in the site's own network namespace, joined to the
host by a veth pair. The hub (its site gateway, its aggregators) is reached at an address on
the host's loopback that every site namespace routes to; a site's namespace drops every new
connection coming in on its veth, so the site can dial out and nothing can dial in. Traffic
goes only to the loopback and these namespaces. `cut` takes a site's link down (its packets
are lost, nobody is told) and `restore` brings it back.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (the test skips with it), or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {package})"
    probe = f"fedfleet-probe-{secrets.token_hex(3)}"
    try:
        ip("netns", "add", probe)
        rule = ["ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-m", "conntrack"]
        subprocess.run([*rule, "--ctstate", "NEW", "-j", "DROP"], check=True, capture_output=True, timeout=10)
    except subprocess.CalledProcessError as err:
        return f"cannot make a network namespace with a drop rule: {err.stderr.decode()[:200].strip()}"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", probe)
    return None


@dataclass
class SiteNetwork:
    namespace: str
    host_link: str
    host_ip: str  # the host's end of the veth: where the site reaches its own API server
    site_ip: str

    def wrap(self) -> list[str]:
        """The command prefix that runs a process in the site's namespace."""
        return ["ip", "netns", "exec", self.namespace]

    def cut(self) -> None:
        ip("link", "set", self.host_link, "down")

    def restore(self) -> None:
        ip("link", "set", self.host_link, "up")

    def refuses_inbound(self) -> bool:
        """A connection from the host to the site times out (dropped), not refused (a closed
        port would answer with a reset if the rule were missing)."""
        try:
            socket.create_connection((self.site_ip, 9), timeout=1).close()
        except TimeoutError:
            return True
        except OSError:
            return False
        return False


@dataclass
class Network:
    """The hub's address on the loopback and one namespace per site, removed together."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    octet: int = field(default_factory=lambda: random.randint(100, 250))
    sites: list[SiteNetwork] = field(default_factory=list)

    @property
    def hub_ip(self) -> str:
        return f"10.{self.octet}.0.1"

    def open(self) -> Network:
        ip("addr", "add", f"{self.hub_ip}/32", "dev", "lo")
        return self

    def site(self, name: str) -> SiteNetwork:
        k = len(self.sites) + 1
        subnet = f"10.{self.octet}.{k}"
        net = SiteNetwork(f"fedfleet-{self.tag}-{name}", f"ffh{self.tag}{k}", f"{subnet}.1", f"{subnet}.2")
        inside = f"ffs{self.tag}{k}"
        self.sites.append(net)
        ip("netns", "add", net.namespace)
        ip("link", "add", net.host_link, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", net.namespace)
        ip("addr", "add", f"{net.host_ip}/30", "dev", net.host_link)
        ip("link", "set", net.host_link, "up")
        ip("-n", net.namespace, "addr", "add", f"{net.site_ip}/30", "dev", inside)
        ip("-n", net.namespace, "link", "set", inside, "up")
        ip("-n", net.namespace, "link", "set", "lo", "up")
        ip("-n", net.namespace, "route", "add", f"{self.hub_ip}/32", "via", net.host_ip)
        drop_new = ["-i", inside, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
        subprocess.run(
            [*net.wrap(), "iptables", "-A", "INPUT", *drop_new],
            check=True,
            capture_output=True,
            timeout=10,
        )
        return net

    def close(self) -> None:
        for net in self.sites:  # the veth goes with its namespace
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", net.namespace)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("addr", "del", f"{self.hub_ip}/32", "dev", "lo")
