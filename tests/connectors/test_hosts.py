"""The host policy: which URLs a connector may use and where its connections may go."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from connectors.delighted.client import DelightedClient
from connectors.errors import ConfigError
from connectors.hosts import AllowList, HostNotAllowedError, HostPolicy, is_public, matches
from connectors.hubspot.client import HubSpotClient
from connectors.salesforce.client import AuthFlow, Credentials, SalesforceClient
from tests.fakes.recorder import Recorder
from tests.fakes.server import ALLOWED_HOSTS, Served, serve

SALESFORCE = ("*.salesforce.com", "*.force.com")
PUBLIC = "93.184.216.34"


def fixed(*addresses: str) -> Callable[[str, int], Sequence[str]]:
    """A resolver answering `addresses` for every name."""
    return lambda _host, _port: list(addresses)


def rebinding(first: str, then: str) -> Callable[[str, int], Sequence[str]]:
    """A resolver answering `first` once, then `then`: DNS rebinding."""
    answers = [first]

    def resolve(_host: str, _port: int) -> list[str]:
        return [answers.pop()] if answers else [then]

    return resolve


def test_given_vendor_patterns_when_matching_then_only_their_subdomains_match() -> None:
    assert matches("acme.my.salesforce.com", SALESFORCE)
    assert matches("LOGIN.Salesforce.com.", SALESFORCE)
    assert matches("api.hubapi.com", ("api.hubapi.com",))
    for host in (
        "salesforce.com",
        "evilsalesforce.com",
        "salesforce.com.evil.example",
        "api.hubapi.com.evil.example",
        "xapi.hubapi.com",
    ):
        assert not matches(host, (*SALESFORCE, "api.hubapi.com")), host


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example",
        "http://login.salesforce.com",  # the vendor, but in clear text
        "file:///etc/passwd",
        "ftp://login.salesforce.com",
        "https://user:pw@login.salesforce.com",
        "https://127.0.0.1",
        "https://localhost",
        "https://[::1]",
        "https://169.254.169.254",
        "https://[fd00:ec2::254]",
        "https://10.0.0.8",
        "https://0.0.0.0",
        "https://52.1.2.3",  # a public address, but not the vendor's name
    ],
)
def test_given_a_url_outside_the_policy_when_validating_then_refused(url: str) -> None:
    policy = HostPolicy(SALESFORCE, resolver=fixed(PUBLIC))
    with pytest.raises(HostNotAllowedError) as caught:
        policy.validate(url, field="login_url")
    assert caught.value.field == "login_url"
    assert isinstance(caught.value, ConfigError)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "169.254.169.254", "fe80::1", "fd00:ec2::254", "10.1.2.3",
     "192.168.0.1", "172.16.0.1", "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "ff02::1",
     "::ffff:127.0.0.1", "240.0.0.1"],
)  # fmt: skip
def test_given_a_vendor_name_resolving_to_a_non_public_address_then_refused(
    address: str,
) -> None:
    policy = HostPolicy(SALESFORCE, resolver=fixed(address))
    with pytest.raises(HostNotAllowedError, match="non-public address"):
        policy.validate("https://acme.my.salesforce.com", field="login_url")


def test_given_one_resolved_address_is_internal_then_the_whole_host_is_refused() -> None:
    policy = HostPolicy(SALESFORCE, resolver=fixed(PUBLIC, "169.254.169.254"))
    with pytest.raises(HostNotAllowedError):
        policy.validate("https://acme.my.salesforce.com")


def test_given_a_real_name_resolving_to_loopback_when_checked_then_refused() -> None:
    # "localhost" through the system resolver, as a vendor host: its address decides.
    policy = HostPolicy(("localhost",), AllowList.parse(["10.9.9.9"]))
    with pytest.raises(HostNotAllowedError, match="non-public address"):
        policy.validate("https://localhost:8443")


def test_given_a_vendor_name_resolving_publicly_then_accepted() -> None:
    policy = HostPolicy(SALESFORCE, resolver=fixed(PUBLIC, "2606:4700::1"))
    policy.validate("https://acme.my.salesforce.com")
    assert policy.addresses("acme.my.salesforce.com", 443) == [PUBLIC, "2606:4700::1"]


def test_given_an_unresolvable_vendor_name_when_validating_then_accepted() -> None:
    # Nothing can be sent to it; connections check the addresses again when it resolves.
    def nowhere(_host: str, _port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "unknown")

    HostPolicy(SALESFORCE, resolver=nowhere).validate("https://acme.my.salesforce.com")


def test_given_the_allowlist_then_listed_addresses_names_and_networks_pass_in_http_too() -> None:
    allowed = AllowList.parse(["127.0.0.1", "proxy.corp", "10.20.0.0/16", "::1"])
    policy = HostPolicy(SALESFORCE, allowed, resolver=fixed("10.20.3.4"))
    policy.validate("http://127.0.0.1:8080")
    policy.validate("https://[::1]:8443")
    policy.validate("http://proxy.corp")
    policy.validate("https://10.20.1.1")
    # A vendor name resolving into an allowlisted network is accepted too.
    policy.validate("https://acme.my.salesforce.com")
    with pytest.raises(HostNotAllowedError):
        policy.validate("https://10.21.0.1")
    with pytest.raises(HostNotAllowedError):
        policy.validate("http://localhost")  # 127.0.0.1 listed, the name is not


@pytest.mark.parametrize("entry", ["http://x", "a b", "host/path", "bad..name", "-"])
def test_given_a_malformed_allowlist_entry_then_value_error(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a host name"):
        AllowList.parse([entry])


def test_given_addresses_then_only_public_unicast_ones_are_public() -> None:
    assert is_public(ipaddress.ip_address(PUBLIC))
    assert is_public(ipaddress.ip_address("2606:4700::1"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert not is_public(ipaddress.ip_address("239.1.1.1"))


# ------------------------------------------------------------------ at connect time


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[tuple[Served, Recorder]]:
    """An internal HTTPS service on loopback (its certificate names localhost)."""
    recorder = Recorder(body=b'{"results": [], "access_token": "x", "instance_url": "https://x"}')
    with serve(recorder, tls=True, tmp_dir=str(tmp_path)) as served:
        yield served, recorder


def _salesforce(url: str, served: Served, policy: HostPolicy) -> Callable[[], object]:
    creds = Credentials(AuthFlow.password, "client-id-1", "client-secret-1", "user", "pw", "tok")
    client = SalesforceClient(
        login_url=url,
        api_version="59.0",
        credentials=creds,
        timeout_seconds=5,
        ca_bundle=served.ca_bundle,
        policy=policy,
    )
    return client.login


def _hubspot(url: str, served: Served, policy: HostPolicy) -> Callable[[], object]:
    client = HubSpotClient(
        base_url=url,
        access_token="pat-secret-token",
        timeout_seconds=5,
        policy=policy,
        ca_bundle=served.ca_bundle,
    )
    return lambda: client.list_page(
        "contacts", limit=1, after=None, properties=["hs_object_id"], archived=False
    )


def _delighted(url: str, served: Served, policy: HostPolicy) -> Callable[[], object]:
    client = DelightedClient(
        url + "/v1",
        "delighted-secret-key",
        timeout_seconds=5,
        policy=policy,
        ca_bundle=served.ca_bundle,
    )
    return client.metrics


CLIENTS = pytest.mark.parametrize("make_call", [_salesforce, _hubspot, _delighted])


@CLIENTS
def test_given_a_name_rebinding_to_loopback_after_validation_then_the_connection_is_refused(
    victim: tuple[Served, Recorder], make_call: Callable[..., Callable[[], object]]
) -> None:
    served, recorder = victim
    # Public when the URL is validated, loopback when the transport connects.
    policy = HostPolicy(("localhost",), resolver=rebinding(PUBLIC, "127.0.0.1"))
    call = make_call(f"https://localhost:{served.port}", served, policy)

    with pytest.raises(HostNotAllowedError, match="non-public address"):
        call()
    assert recorder.received == []


@CLIENTS
def test_given_the_same_host_allowlisted_then_the_request_arrives(
    victim: tuple[Served, Recorder], make_call: Callable[..., Callable[[], object]]
) -> None:
    # The control for the test above: only the policy stood between client and service.
    served, recorder = victim
    policy = HostPolicy(("localhost",), AllowList.parse(ALLOWED_HOSTS), fixed("127.0.0.1"))
    call = make_call(f"https://localhost:{served.port}", served, policy)

    try:
        call()
    except ConfigError:
        pass  # the recorder's reply is nobody's API; reaching it is what counts
    assert len(recorder.received) == 1
