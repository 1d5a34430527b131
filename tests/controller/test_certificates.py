"""The operator's Secrets for a training's identities, against the test API server over HTTP:
issued once, renewed before expiry, issued from a user's CA, refused when the spec cannot work."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from fedfleet.api.load import parse_training
from fedfleet.api.site import FederationSiteSpec
from fedfleet.controller import resources as res
from fedfleet.controller.certificates import CertificateError, Certificates
from fedfleet.controller.kube import Kube
from fedfleet.identity.ca import Bundle, Issuer, identity_of
from fedfleet.identity.names import Identity
from fedfleet.identity.rotation import TrustState
from kubernetes import config

from tests.controller.cluster import training_manifest
from tests.kube.fixtures import ApiServerHandle

REF = res.TrainingRef("llm", "default", "uid-1")
SITES = [
    res.SiteRef("site-a", "default", FederationSiteSpec()),
    res.SiteRef("site-b", "hospital", FederationSiteSpec()),
]
DAY = datetime.timedelta(days=1)


def spec(**tls: object) -> object:
    body = training_manifest("llm", 50051, ["site-a", "site-b"], secureAggregation={"enabled": False})
    if tls:
        body["spec"]["tls"] = tls
    return parse_training(body, "spec").spec


@pytest.fixture
def kube(kube_api: ApiServerHandle) -> Kube:
    return Kube(config.new_client_from_config(str(kube_api.kubeconfig)))


async def secrets(kube: Kube) -> dict[tuple[str, str], dict[str, object]]:
    return {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s
        for s in await kube.list("Secret", None, "fedfleet.io/training=llm")
    }


def bundle(secret: dict[str, object]) -> Bundle:
    return Bundle.from_secret_data(secret["data"])


async def test_every_identity_gets_a_tls_secret_where_its_pod_runs(
    kube: Kube, kube_api: ApiServerHandle
) -> None:
    certificates = Certificates(kube)
    controller = await certificates.ensure(REF, spec(), SITES)
    calls = len(kube_api.calls)
    assert await certificates.ensure(REF, spec(), SITES) == controller
    assert len(kube_api.calls) == calls  # checked a moment ago: the next pass costs no API call
    listed = {c.namespace for c in kube_api.calls if (c.verb, c.resource) == ("list", "secrets")}
    assert listed == {"default", "hospital"}  # per namespace: never every Secret in the cluster
    found = await secrets(kube)
    assert sorted(found) == [
        ("default", "llm-aggregator-tls"),
        ("default", "llm-ca"),
        ("default", "llm-lineage-key"),
        ("default", "llm-site-a-0-tls"),
        ("hospital", "llm-site-b-0-tls"),
    ]
    ca = Issuer.from_pem(
        bundle(found[("default", "llm-ca")]).cert_pem, bundle(found[("default", "llm-ca")]).key_pem
    )
    site_b = bundle(found[("hospital", "llm-site-b-0-tls")])
    assert found[("hospital", "llm-site-b-0-tls")]["type"] == "kubernetes.io/tls"
    assert "ownerReferences" not in found[("hospital", "llm-site-b-0-tls")]["metadata"]
    assert found[("default", "llm-site-a-0-tls")]["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    site_b.certificate.verify_directly_issued_by(ca.cert)
    assert site_b.ca_pem == ca.cert_pem
    assert identity_of(site_b.certificate) == Identity.of_client("default", "llm", "site-b", "site-b-0")
    assert identity_of(controller.certificate) == Identity("default", "llm", "controller")
    key = base64.b64decode(found[("default", "llm-lineage-key")]["data"]["ed25519.pem"])
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")


async def test_a_second_pass_changes_nothing_and_a_certificate_near_expiry_is_renewed(kube: Kube) -> None:
    certificates = Certificates(kube, check_seconds=0)  # every pass checks
    await certificates.ensure(REF, spec(), SITES)
    first = await secrets(kube)
    await certificates.ensure(REF, spec(), SITES)
    assert {k: s["metadata"]["resourceVersion"] for k, s in (await secrets(kube)).items()} == {
        k: s["metadata"]["resourceVersion"] for k, s in first.items()
    }

    ca_data = bundle(first[("default", "llm-ca")])
    ca = Issuer.from_pem(ca_data.cert_pem, ca_data.key_pem)
    identity = Identity.of_client("default", "llm", "site-b", "site-b-0")
    ageing = ca.issue(identity, 3 * DAY, now=datetime.datetime.now(datetime.UTC) - 2.5 * DAY)  # a sixth left
    stale = first[("hospital", "llm-site-b-0-tls")] | {"data": ageing.secret_data()}
    await kube.request("PUT", "/api/v1/namespaces/hospital/secrets/llm-site-b-0-tls", stale)

    await certificates.ensure(REF, spec(), SITES)
    after = await secrets(kube)
    renewed = bundle(after[("hospital", "llm-site-b-0-tls")]).certificate
    assert renewed.serial_number != ageing.certificate.serial_number
    assert renewed.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > 29 * DAY
    assert (
        after[("default", "llm-aggregator-tls")]["data"] == first[("default", "llm-aggregator-tls")]["data"]
    )


async def test_a_user_issuer_secret_issues_every_certificate(kube: Kube) -> None:
    org = Issuer.generate("org CA", 365 * DAY)
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "org-ca", "namespace": "default"},
            "data": org.as_bundle().secret_data(),
        }
    )
    await Certificates(kube).ensure(REF, spec(issuerSecret="org-ca"), SITES)
    found = await secrets(kube)
    assert ("default", "llm-ca") not in found
    bundle(found[("default", "llm-aggregator-tls")]).certificate.verify_directly_issued_by(org.cert)


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"issuerSecret": "nope"}, "spec.tls.issuerSecret: no Secret nope in namespace default"),
        ({"enabled": False}, "spec.tls.enabled: false is for `fedfleet local run` only"),
    ],
)
async def test_tls_settings_a_cluster_cannot_honour_are_refused(
    kube: Kube, tls: dict[str, object], message: str
) -> None:
    with pytest.raises(CertificateError, match=message.replace(".", r"\.").replace("`", "`")):
        await Certificates(kube).ensure(REF, spec(**tls), SITES)
    assert await secrets(kube) == {}


async def test_a_ca_running_out_is_rotated_with_overlap_through_the_secrets(kube: Kube) -> None:
    """Step by step, each waiting for the kubelet to refresh every pod's volume: the new CA joins
    every ca.crt (leaves kept), then issues every leaf (both CAs still trusted), then the old
    one leaves the bundle. A restarted operator continues from the CA's Secret."""
    clock = [datetime.datetime.now(datetime.UTC).timestamp()]
    certificates = Certificates(kube, check_seconds=0, settle_seconds=300, clock=lambda: clock[0])
    await certificates.ensure(REF, spec(), SITES)
    first = await secrets(kube)
    old = Issuer.generate(
        "default/llm fedfleet CA", 365 * DAY, now=datetime.datetime.now(datetime.UTC) - 300 * DAY
    )
    steady = TrustState(old)  # as if the operator had issued everything from `old` long ago
    start = {}
    for key, found in first.items():
        if key[1].endswith("-tls"):
            cert = bundle(found).certificate
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            leaf = steady.signer.issue(identity_of(cert), DAY, tuple(names.get_values_for_type(x509.DNSName)))
            start[key] = found | {"data": leaf.secret_data()}
        elif key[1] == "llm-ca":
            start[key] = found | {"data": steady.secret_data()}
    for (namespace, name), secret in start.items():
        await kube.request("PUT", f"/api/v1/namespaces/{namespace}/secrets/{name}", secret)
    leaves = [k for k in start if k[1].endswith("-tls")]

    def cas(secret: dict[str, object]) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(bundle(secret).ca_pem)

    await certificates.ensure(REF, spec(), SITES)
    introduced = await secrets(kube)
    new = TrustState.from_secret_data(introduced[("default", "llm-ca")]["data"]).next
    assert new is not None
    for key in leaves:
        assert cas(introduced[key]) == [old.cert, new.cert]
        assert bundle(introduced[key]).cert_pem == bundle(start[key]).cert_pem  # same leaf, new trust
    assert bundle(introduced[("default", "llm-ca")]).cert_pem == old.cert_pem  # the old CA still issues

    clock[0] += 299
    await Certificates(kube, check_seconds=0, settle_seconds=300, clock=lambda: clock[0]).ensure(
        REF, spec(), SITES
    )
    assert await secrets(kube) == introduced  # not yet: some kubelet may not have refreshed

    clock[0] += 1
    await Certificates(kube, check_seconds=0, settle_seconds=300, clock=lambda: clock[0]).ensure(
        REF, spec(), SITES
    )
    switched = await secrets(kube)
    for key in leaves:
        bundle(switched[key]).certificate.verify_directly_issued_by(new.cert)
        assert cas(switched[key]) == [new.cert, old.cert]

    clock[0] += 300
    controller = await certificates.ensure(REF, spec(), SITES)
    done = await secrets(kube)
    for key in leaves:
        assert cas(done[key]) == [new.cert]
        assert bundle(done[key]).cert_pem == bundle(switched[key]).cert_pem
    controller.certificate.verify_directly_issued_by(new.cert)
    assert x509.load_pem_x509_certificates(controller.ca_pem) == [new.cert]
