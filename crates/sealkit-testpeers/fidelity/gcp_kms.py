"""Drives the Cloud KMS test peer with Google's official client (google-cloud-kms, REST
transport) through every operation the peer serves. A peer this client cannot drive fails.

Usage: python gcp_kms.py http://127.0.0.1:PORT
"""

import json
import sys
import urllib.request
import uuid

from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms
from google.protobuf import duration_pb2, timestamp_pb2

ENDPOINT = sys.argv[1]
CHECKS = 0


def check(condition, what):
    global CHECKS
    if not condition:
        raise AssertionError(what)
    CHECKS += 1


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Cloud KMS's *_crc32c fields carry it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def raises(error, call, what):
    try:
        call()
    except error:
        check(True, what)
        return
    except Exception as other:  # noqa: BLE001 - report what came instead
        raise AssertionError(f"{what}: expected {error.__name__}, got {other!r}") from other
    raise AssertionError(f"{what}: expected {error.__name__}, nothing was raised")


def fault(mode, count=1, retry_after=1):
    body = json.dumps({"mode": mode, "count": count, "retry_after": retry_after}).encode()
    request = urllib.request.Request(f"{ENDPOINT}/_peer/fault", data=body, method="POST")
    urllib.request.urlopen(request).read()


client = kms.KeyManagementServiceClient(
    transport="rest",
    credentials=AnonymousCredentials(),
    client_options=ClientOptions(api_endpoint=ENDPOINT),
)
parent = client.common_location_path(f"fidelity-{uuid.uuid4().hex[:8]}", "global")

# Key rings: create, get, list with paging, a duplicate.
rings = []
for i in range(3):
    ring = client.create_key_ring(
        request={"parent": parent, "key_ring_id": f"ring-{i}", "key_ring": {}}
    )
    check(ring.name == f"{parent}/keyRings/ring-{i}", "key ring name")
    check(ring.create_time.year >= 2024, "key ring create time")
    rings.append(ring)
check(client.get_key_ring(name=rings[0].name).name == rings[0].name, "get key ring")
listed = [r.name for r in client.list_key_rings(request={"parent": parent, "page_size": 2})]
check(listed == [r.name for r in rings], f"key rings paged by 2: {listed}")
raises(
    exceptions.Conflict,
    lambda: client.create_key_ring(
        request={"parent": parent, "key_ring_id": "ring-0", "key_ring": {}}
    ),
    "a duplicate key ring is ALREADY_EXISTS (409)",
)
raises(exceptions.NotFound, lambda: client.get_key_ring(name=f"{parent}/keyRings/nope"), "missing ring")

# Crypto keys: create with a version template, get, list with paging, patch rotation.
ring = rings[0].name
key = client.create_crypto_key(
    request={
        "parent": ring,
        "crypto_key_id": "pii",
        "crypto_key": {
            "purpose": kms.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT,
            "version_template": {
                "algorithm": kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION
            },
        },
    }
)
check(key.name == f"{ring}/cryptoKeys/pii", "crypto key name")
check(key.primary.name == f"{key.name}/cryptoKeyVersions/1", "version 1 is primary")
check(key.primary.state == kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED, "enabled")
client.create_crypto_key(
    request={
        "parent": ring,
        "crypto_key_id": "other",
        "crypto_key": {"purpose": kms.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT},
    }
)
keys = [k.name for k in client.list_crypto_keys(request={"parent": ring, "page_size": 1})]
check(sorted(keys) == sorted([key.name, f"{ring}/cryptoKeys/other"]), f"keys paged by 1: {keys}")
check(client.get_crypto_key(name=key.name).primary.name == key.primary.name, "get crypto key")
key.rotation_period = duration_pb2.Duration(seconds=90 * 86400)
next_rotation = timestamp_pb2.Timestamp(seconds=4102444800)
key.next_rotation_time = next_rotation
patched = client.update_crypto_key(
    request={"crypto_key": key, "update_mask": {"paths": ["rotation_period", "next_rotation_time"]}}
)
check(patched.rotation_period.total_seconds() == 90 * 86400, "rotation period patched")
check(int(patched.next_rotation_time.timestamp()) == 4102444800, "next rotation time patched")

# Encrypt / decrypt with every CRC32C field and associated data.
plaintext, aad = b"a 32-byte data key, wrapped!....", b'{"table":"customers"}'
sealed = client.encrypt(
    request={
        "name": key.name,
        "plaintext": plaintext,
        "additional_authenticated_data": aad,
        "plaintext_crc32c": crc32c(plaintext),
        "additional_authenticated_data_crc32c": crc32c(aad),
    }
)
check(sealed.name == f"{key.name}/cryptoKeyVersions/1", "the response names the version")
check(sealed.verified_plaintext_crc32c, "plaintext CRC32C verified")
check(sealed.verified_additional_authenticated_data_crc32c, "AAD CRC32C verified")
check(sealed.ciphertext_crc32c == crc32c(sealed.ciphertext), "ciphertext CRC32C returned")
check(plaintext not in sealed.ciphertext, "the ciphertext is not the plaintext")
opened = client.decrypt(
    request={
        "name": key.name,
        "ciphertext": sealed.ciphertext,
        "additional_authenticated_data": aad,
        "ciphertext_crc32c": crc32c(sealed.ciphertext),
    }
)
check(opened.plaintext == plaintext, "decrypts")
check(opened.plaintext_crc32c == crc32c(plaintext), "plaintext CRC32C returned")
check(opened.used_primary, "used the primary")
raises(
    exceptions.BadRequest,
    lambda: client.decrypt(
        request={"name": key.name, "ciphertext": sealed.ciphertext, "additional_authenticated_data": b"other"}
    ),
    "another AAD does not decrypt",
)
raises(
    exceptions.BadRequest,
    lambda: client.encrypt(
        request={"name": key.name, "plaintext": plaintext, "plaintext_crc32c": crc32c(plaintext) ^ 1}
    ),
    "a wrong plaintext CRC32C is refused",
)
tampered = bytearray(sealed.ciphertext)
tampered[-1] ^= 1
raises(
    exceptions.BadRequest,
    lambda: client.decrypt(
        request={"name": key.name, "ciphertext": bytes(tampered), "additional_authenticated_data": aad}
    ),
    "a tampered ciphertext does not decrypt",
)

# Versions: create, make primary, list with paging, disable/enable, destroy/restore.
v2 = client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
check(v2.name == f"{key.name}/cryptoKeyVersions/2", "version 2 created")
check(client.get_crypto_key(name=key.name).primary.name.endswith("/1"), "a new version is not primary")
client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "2"})
newer = client.encrypt(request={"name": key.name, "plaintext": b"x"})
check(newer.name == v2.name, "encrypt uses the new primary")
old = client.decrypt(request={"name": key.name, "ciphertext": sealed.ciphertext, "additional_authenticated_data": aad})
check(old.plaintext == plaintext and not old.used_primary, "old ciphertexts decrypt with their version")
versions = [v.name for v in client.list_crypto_key_versions(request={"parent": key.name, "page_size": 1})]
check(versions == [f"{key.name}/cryptoKeyVersions/1", v2.name], f"versions paged by 1: {versions}")
v1 = client.get_crypto_key_version(name=f"{key.name}/cryptoKeyVersions/1")
v1.state = kms.CryptoKeyVersion.CryptoKeyVersionState.DISABLED
disabled = client.update_crypto_key_version(request={"crypto_key_version": v1, "update_mask": {"paths": ["state"]}})
check(disabled.state == kms.CryptoKeyVersion.CryptoKeyVersionState.DISABLED, "disabled")
raises(
    exceptions.BadRequest,  # FAILED_PRECONDITION is HTTP 400
    lambda: client.decrypt(request={"name": key.name, "ciphertext": sealed.ciphertext, "additional_authenticated_data": aad}),
    "a disabled version does not decrypt",
)
v1.state = kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED
client.update_crypto_key_version(request={"crypto_key_version": v1, "update_mask": {"paths": ["state"]}})
destroyed = client.destroy_crypto_key_version(name=v1.name)
check(destroyed.state == kms.CryptoKeyVersion.CryptoKeyVersionState.DESTROY_SCHEDULED, "destroy scheduled")
check(destroyed.destroy_time.year >= 2026, "destroy time set")
raises(
    exceptions.BadRequest,
    lambda: client.decrypt(request={"name": key.name, "ciphertext": sealed.ciphertext, "additional_authenticated_data": aad}),
    "a version scheduled for destruction does not decrypt",
)
restored = client.restore_crypto_key_version(name=v1.name)
check(restored.state == kms.CryptoKeyVersion.CryptoKeyVersionState.DISABLED, "restored as disabled")

# Faults: 429 with Retry-After, 503.
fault("throttle")
raises(exceptions.TooManyRequests, lambda: client.get_key_ring(name=ring, retry=None), "429 RESOURCE_EXHAUSTED")
fault("unavailable")
raises(exceptions.ServiceUnavailable, lambda: client.get_key_ring(name=ring, retry=None), "503 UNAVAILABLE")
check(client.get_key_ring(name=ring).name == ring, "answers again after the faults")

print(f"gcp-kms fidelity: {CHECKS} checks passed")
