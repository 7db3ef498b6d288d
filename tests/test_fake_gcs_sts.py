"""tests/fake_gcs_sts.py proven with a client stix did not write: google-auth, Google's own
Python library, downscopes a service account's token at the fake STS exactly as it would at
``sts.googleapis.com`` (its service-account token from the fake's OAuth endpoint, the
exchange, the boundary, the answer and the error answers), so the fake speaks Google's wire
and not only stix's idea of it."""

from __future__ import annotations

import datetime
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from google.auth import downscoped, exceptions
from google.auth.transport.requests import Request
from google.oauth2 import service_account, sts

from tests import stores_bed
from tests.fake_gcs_sts import ACCESS_TOKEN, DAEMON, EXCHANGE, FakeSts, served

pytestmark = pytest.mark.anyio

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ROLE = "inRole:roles/storage.objectViewer"


@pytest.fixture
async def sts_url() -> AsyncIterator[tuple[FakeSts, str]]:
    fake = FakeSts({DAEMON}, lifetime=1800)
    async with served(fake) as url:
        yield fake, url


def boundary(*resources: str) -> downscoped.CredentialAccessBoundary:
    rules = [downscoped.AccessBoundaryRule(r, [ROLE]) for r in resources]
    return downscoped.CredentialAccessBoundary(rules)


def bucket(name: str) -> str:
    return f"//storage.googleapis.com/projects/_/buckets/{name}"


def downscoped_at(
    url: str, key: Path, cab: downscoped.CredentialAccessBoundary
) -> downscoped.Credentials:
    """google-auth's downscoped credentials over a service account whose ``token_uri`` is the
    fake's OAuth endpoint, exchanging at the fake STS. google-auth has no public knob for the
    STS URL (it is ``https://sts.{universe_domain}/v1/token``, https only), so its one STS
    client is given the fake's URL: the request it makes and the answer it reads are its own."""
    info = json.loads(key.read_text()) | {"token_uri": f"{url}/oauth2/token"}
    source = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    creds = downscoped.Credentials(source_credentials=source, credential_access_boundary=cab)
    creds._sts_client = sts.Client(f"{url}/v1/token")
    return creds


async def test_google_auth_downscopes_a_token_at_the_fake(
    sts_url: tuple[FakeSts, str], tmp_path: Path
) -> None:
    """google-auth signs its service account's assertion, gets the daemon's token from the
    fake's OAuth endpoint, exchanges it with a boundary for one bucket and takes the token and
    lifetime the fake minted; the fake read the same boundary google-auth sent. Several rules
    (Google allows ten) give one token for each bucket named."""
    fake, url = sts_url
    key = stores_bed.service_account_key(tmp_path / "sa.json")
    cab = boundary(bucket("b-1"))
    creds = downscoped_at(url, key, cab)
    before = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    await anyio.to_thread.run_sync(creds.refresh, Request())
    assert creds.token is not None and fake.issued[creds.token][0] == {"b-1"}
    assert creds.valid and creds.expiry is not None
    lasts = (creds.expiry - before).total_seconds()
    assert 1800 - 60 <= lasts <= 1800 + 60, lasts
    form = fake.forms[-1]
    assert form["subject_token"] == DAEMON and form["grant_type"] == EXCHANGE
    assert json.loads(urllib.parse.unquote(form["options"])) == cab.to_json()
    both = downscoped_at(url, key, boundary(bucket("b-1"), bucket("b-2")))
    await anyio.to_thread.run_sync(both.refresh, Request())
    assert both.token is not None and fake.issued[both.token][0] == {"b-1", "b-2"}


async def test_google_auth_raises_its_own_errors_on_the_fakes_refusals(
    sts_url: tuple[FakeSts, str], tmp_path: Path
) -> None:
    """A boundary on something that is not a bucket, a grant type that is not token exchange
    and a token STS does not know each get Google's error answer, which google-auth turns into
    its ``OAuthError`` naming the error code, as real STS's do; the fake mints nothing."""
    fake, url = sts_url
    key = stores_bed.service_account_key(tmp_path / "sa.json")
    not_a_bucket = downscoped_at(url, key, boundary("//compute.googleapis.com/projects/p"))
    with pytest.raises(exceptions.OAuthError, match="Error code invalid_request"):
        await anyio.to_thread.run_sync(not_a_bucket.refresh, Request())
    client = sts.Client(f"{url}/v1/token")

    def exchange(grant_type: str, subject: str) -> object:
        return client.exchange_token(
            request=Request(),
            grant_type=grant_type,
            subject_token=subject,
            subject_token_type=ACCESS_TOKEN,
            requested_token_type=ACCESS_TOKEN,
            additional_options=boundary(bucket("b-1")).to_json(),
        )

    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    with pytest.raises(exceptions.OAuthError, match="Error code unsupported_grant_type"):
        await anyio.to_thread.run_sync(exchange, grant, DAEMON)
    with pytest.raises(exceptions.OAuthError, match="Error code invalid_grant"):
        await anyio.to_thread.run_sync(exchange, EXCHANGE, "stolen")
    assert fake.issued == {} and len(fake.forms) == 3
