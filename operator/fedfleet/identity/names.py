"""How an identity is written into a certificate, and read back out of one.

One scheme, the certificate's only URI SAN (SPIFFE-style, trust domain fedfleet.io):

    spiffe://fedfleet.io/ns/<ns>/training/<t>/site/<site>/client/<client-id>   a site client
    spiffe://fedfleet.io/ns/<ns>/training/<t>/aggregator                        the aggregator
    spiffe://fedfleet.io/ns/<ns>/training/<t>/controller                        the operator

The subject CN repeats the last part (client id, `<t>-aggregator` or `controller`) for humans
reading `openssl x509`; authorisation reads the URI only. Every segment is a DNS label, so a
name can neither be empty nor smuggle a `/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TRUST_DOMAIN = "fedfleet.io"
Role = Literal["client", "aggregator", "controller"]
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_URI = re.compile(
    rf"^spiffe://{re.escape(TRUST_DOMAIN)}/ns/(?P<ns>{_LABEL})/training/(?P<training>{_LABEL})"
    rf"/(?:(?P<role>aggregator|controller)|site/(?P<site>{_LABEL})/client/(?P<client>{_LABEL}))$"
)


class IdentityError(ValueError):
    """A certificate carries no fedfleet identity, or a malformed one."""


@dataclass(frozen=True)
class Identity:
    namespace: str
    training: str
    role: Role
    site: str = ""
    client: str = ""

    @classmethod
    def of_client(cls, namespace: str, training: str, site: str, client: str) -> Identity:
        return cls(namespace, training, "client", site, client)

    @property
    def uri(self) -> str:
        base = f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/training/{self.training}"
        if self.role == "client":
            return f"{base}/site/{self.site}/client/{self.client}"
        return f"{base}/{self.role}"

    @property
    def common_name(self) -> str:
        return {"client": self.client, "aggregator": f"{self.training}-aggregator"}.get(self.role, self.role)

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> Identity:
        found = _URI.match(uri)
        if found is None:
            raise IdentityError(f"{uri!r} is not a fedfleet identity (spiffe://{TRUST_DOMAIN}/ns/...)")
        if found["role"]:
            role: Role = "controller" if found["role"] == "controller" else "aggregator"
            return cls(found["ns"], found["training"], role)
        return cls.of_client(found["ns"], found["training"], found["site"], found["client"])


def aggregator_dns_names(training: str, namespace: str) -> list[str]:
    """The Service names a client may dial; all go into the server certificate."""
    service = f"{training}-aggregator"
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def server_name(training: str, namespace: str) -> str:
    """The name clients and the controller verify the server certificate against, whatever
    address they dial (tests and port-forwards dial 127.0.0.1)."""
    return aggregator_dns_names(training, namespace)[2]
