"""What each site's clients did in this training: updates accepted and refused, update bytes
read from them, model bytes sent to them, and their time in rounds. Counted by the aggregator,
which sees every upload and download, and kept in `STATE/accounting.json` so the figures
survive a restart and only grow: `saved` writes them before they are shown (GetStatus), so no
figure anyone saw is lost by a crash.

A client's site is the one it joined as (`JoinRound`: with mTLS the guard has checked it
against the certificate; a local run without certificates: what the client says). A client
that has not joined this aggregator process yet is not attributed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedfleet.aggregator.checkpoints import write_durably
from fedfleet.convert import MAX_STATUS_SITES
from fedfleet.logs import get_logger

MAX_SITES = MAX_STATUS_SITES  # figures kept and shown; a site beyond is not counted (logged once)
MAX_CLIENTS = 100_000  # client -> site attributions kept
MAX_SITE_CHARACTERS = 253
log = get_logger(component="aggregator")


@dataclass
class SiteFigures:
    updates_accepted: int = 0
    updates_refused: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    client_seconds: float = 0.0


class SiteAccounts:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sites: dict[str, SiteFigures] = {}
        self._site_of: dict[str, str] = {}  # client id -> site
        self._saved = ""
        self._writing = asyncio.Lock()
        if path.exists():
            try:
                saved = json.loads(path.read_text())
                self.sites = {site: SiteFigures(**figures) for site, figures in saved["sites"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as err:  # not ours: count anew
                log.warning("accounting.unreadable", path=str(path), error=str(err)[:200])
        self._full = False

    def joined(self, client_id: str, site: str) -> None:
        if (
            site
            and len(site) <= MAX_SITE_CHARACTERS
            and (client_id in self._site_of or len(self._site_of) < MAX_CLIENTS)
        ):
            self._site_of[client_id] = site

    def _of(self, client_id: str) -> SiteFigures | None:
        site = self._site_of.get(client_id)
        if site is None:
            return None
        if site not in self.sites:
            if len(self.sites) >= MAX_SITES:
                if not self._full:
                    log.warning("accounting.full", sites=MAX_SITES, site=site)
                    self._full = True
                return None
            self.sites[site] = SiteFigures()
        return self.sites[site]

    def upload(self, client_id: str, accepted: bool, received: int) -> None:
        if (figures := self._of(client_id)) is not None:
            if accepted:
                figures.updates_accepted += 1
            else:
                figures.updates_refused += 1
            figures.bytes_received += received

    def sent(self, client_id: str, sent: int) -> None:
        if (figures := self._of(client_id)) is not None:
            figures.bytes_sent += sent

    def in_rounds(self, seconds: Mapping[str, float]) -> None:
        """Each client's time in a round that closed."""
        for client_id, spent in seconds.items():
            if (figures := self._of(client_id)) is not None:
                figures.client_seconds += max(spent, 0.0)

    async def saved(self) -> dict[str, SiteFigures]:
        """The figures by site name, written durably first when they changed since the last
        write (a temporary sibling, fsynced, renamed; off the event loop). One write at a time:
        two callers at once would share the temporary file, and an older text could land last."""
        async with self._writing:
            figures = {site: dataclasses.replace(f) for site, f in sorted(self.sites.items())}
            rows = {site: dataclasses.asdict(f) for site, f in figures.items()}
            text = json.dumps({"sites": rows}, sort_keys=True)
            if text != self._saved:
                await asyncio.to_thread(write_durably, self.path, text)
                self._saved = text
            return figures
