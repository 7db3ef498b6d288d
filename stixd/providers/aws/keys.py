"""The SSH key stix logs in to its EC2 nodes with: made once in the stix home, imported per region.

The private key never leaves this machine. Its EC2 name is derived from the public key, so a
new key gets a new name and two stix homes of one account never overwrite each other's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.errors import Where, aws_code
from stixproto.errors import ProvisionError

KEY_FILE = "keys/stix-aws-ed25519"


def ensure_local_key(home: Path) -> tuple[Path, str]:
    """(private key path, OpenSSH public key) of the stix-owned key, made if missing."""
    import asyncssh  # the key is made or read once per daemon: no need to load it at start

    private = home / KEY_FILE
    public = private.with_name(private.name + ".pub")
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="stix")
        partial = private.with_name(private.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key("openssh"))
        public.write_bytes(key.export_public_key("openssh"))
        os.replace(partial, private)
    if not public.exists():
        try:
            key = asyncssh.read_private_key(private)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ProvisionError(f"cannot read the stix SSH key {private}: {exc}") from None
        public.write_bytes(key.export_public_key("openssh"))
    return private, public.read_text().strip()


def key_name(public_key: str) -> str:
    body = public_key.split()[1] if len(public_key.split()) > 1 else public_key
    return f"stix-{hashlib.sha256(body.encode()).hexdigest()[:16]}"


async def ensure_key_pair(
    ec2: Ec2Clients, region: str, public_key: str, tags: list[dict[str, str]]
) -> str:
    """The EC2 key pair name for ``public_key`` in ``region``, imported if it is not there."""
    name = key_name(public_key)
    where = Where(region)
    found = await ec2.call(
        where, "describe_key_pairs", Filters=[{"Name": "key-name", "Values": [name]}]
    )
    if found.get("KeyPairs"):
        return name
    try:
        await ec2.call(
            where,
            "import_key_pair",
            KeyName=name,
            PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}],
        )
    except ProvisionError as exc:
        if aws_code(exc) != "InvalidKeyPair.Duplicate":  # a parallel launch won
            raise
    return name
