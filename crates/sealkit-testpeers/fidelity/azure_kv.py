"""Drives the Key Vault test peer with Microsoft's official clients (azure-keyvault-keys,
azure-keyvault-secrets, azure-identity) through every operation the peer serves, signing in
the three ways the peer's tenant offers: a client secret, a workload identity's federated
token, and the App Service managed-identity endpoint. A peer these clients cannot drive
fails.

Usage: python azure_kv.py DIR   (DIR: the peer's ca.pem and credentials.json)
"""

import datetime
import json
import os
import sys
import urllib.request
import ssl

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import (
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.keys import (
    ApiVersion as KeysApiVersion,
    KeyClient,
    KeyCurveName,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
    KeyType,
)
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, EncryptionAlgorithm
from azure.keyvault.secrets import SecretClient

DIR = sys.argv[1]
CA = os.path.join(DIR, "ca.pem")
CREDS = json.load(open(os.path.join(DIR, "credentials.json")))
AUTHORITY = CREDS["authority_host"]
VAULT = AUTHORITY  # the peer serves the vault and the tenant on one address
CHECKS = 0
# The peer is reached at 127.0.0.1, not *.vault.azure.net: the challenge's resource cannot
# match the vault's domain, so that check is off (a real vault passes it).
VAULT_OPTIONS = {"verify_challenge_resource": False, "connection_verify": CA}
IDENTITY_OPTIONS = {"authority": AUTHORITY, "disable_instance_discovery": True, "connection_verify": CA}


def check(condition, what):
    global CHECKS
    if not condition:
        raise AssertionError(what)
    CHECKS += 1


def raises(error, call, what, status=None, code=None):
    try:
        call()
    except error as e:
        if status is not None:
            check(getattr(e, "status_code", None) == status, f"{what}: status {getattr(e, 'status_code', None)}")
        if code is not None:
            got = getattr(getattr(e, "error", None), "code", None)
            check(got == code, f"{what}: error code {got!r}, wanted {code!r}")
        check(True, what)
        return e
    except Exception as other:  # noqa: BLE001 - report what came instead
        raise AssertionError(f"{what}: expected {error.__name__}, got {other!r}") from other
    raise AssertionError(f"{what}: expected {error.__name__}, nothing was raised")


def fault(mode, count=1, retry_after=1):
    body = json.dumps({"mode": mode, "count": count, "retry_after": retry_after}).encode()
    request = urllib.request.Request(f"{VAULT}/_peer/fault", data=body, method="POST")
    urllib.request.urlopen(request, context=ssl.create_default_context(cafile=CA)).read()


app = ClientSecretCredential(CREDS["tenant_id"], CREDS["app"]["client_id"], CREDS["app"]["client_secret"], **IDENTITY_OPTIONS)
keys = KeyClient(VAULT, app, **VAULT_OPTIONS)
secrets = SecretClient(VAULT, app, **VAULT_OPTIONS)
suffix = os.urandom(4).hex()

# ---- keys: create, get, list, versions ----------------------------------------------------
for size in (2048, 3072, 4096):
    k = keys.create_rsa_key(f"rsa{size}-{suffix}", size=size, key_operations=["wrapKey", "unwrapKey"])
    check(k.key_type == KeyType.rsa, f"RSA {size} created")
    check(len(k.key.n) * 8 == size, f"modulus of {size} bits")
    check(sorted(k.key_operations) == ["unwrapKey", "wrapKey"], "key_ops kept")
    check(k.id.startswith(f"{VAULT}/keys/rsa{size}-{suffix}/"), f"kid from the vault URL: {k.id}")
    check(len(k.properties.version) == 32, "32-hex version")

name = f"kek-{suffix}"
v1 = keys.create_rsa_key(name, size=2048, tags={"team": "payments"})
check(v1.properties.enabled, "enabled by default")
check(v1.properties.tags == {"team": "payments"}, "tags kept")
check(v1.properties.recovery_level == "Recoverable+Purgeable", "soft delete on")
check(keys.get_key(name).id == v1.id, "get latest")
check(keys.get_key(name, v1.properties.version).id == v1.id, "get a version")
raises(ResourceNotFoundError, lambda: keys.get_key(f"missing-{suffix}"), "unknown key", 404, "KeyNotFound")
raises(ResourceNotFoundError, lambda: keys.get_key(name, "0" * 32), "unknown version", 404, "KeyNotFound")
raises(HttpResponseError, lambda: keys.create_key(f"bad-{suffix}", KeyType.rsa, size=1024), "bad key size", 400, "BadParameter")
raises(HttpResponseError, lambda: keys.create_ec_key(f"ec-{suffix}", curve=KeyCurveName.p_256), "EC keys refused", 400, "BadParameter")
raises(HttpResponseError, lambda: keys.get_key("bad_name"), "invalid name", 400, "BadParameter")

v2 = keys.rotate_key(name)
check(v2.properties.version != v1.properties.version, "rotate makes a version")
check(keys.get_key(name).properties.version == v2.properties.version, "the rotated version is latest")
versions = list(keys.list_properties_of_key_versions(name))
check(sorted(v.version for v in versions) == sorted([v1.properties.version, v2.properties.version]), "versions listed")
listed = [p.name for p in keys.list_properties_of_keys()]
check(name in listed and f"rsa4096-{suffix}" in listed, "keys listed")
paged = list(keys.list_properties_of_keys(max_page_size=2))
check(len(paged) == len(listed), "nextLink paging")

# ---- update attributes ----------------------------------------------------------------------
updated = keys.update_key_properties(name, v1.properties.version, enabled=False, key_operations=["unwrapKey"])
check(updated.properties.enabled is False, "version disabled")
check(updated.key_operations == ["unwrapKey"], "key_ops updated")
raises(HttpResponseError, lambda: keys.get_key(name, v1.properties.version), "a disabled version is forbidden", 403, "Forbidden")
keys.update_key_properties(name, v1.properties.version, enabled=True, key_operations=["encrypt", "decrypt", "wrapKey", "unwrapKey"])
tagged = keys.update_key_properties(name, v2.properties.version, tags={"team": "ledger"})
check(tagged.properties.tags == {"team": "ledger"}, "tags updated")

# ---- wrap / unwrap, encrypt / decrypt: the client's own RSA checks the peer's -------------
dek = os.urandom(32)
for version in (v1, v2):
    crypto = CryptographyClient(version.id, app, **VAULT_OPTIONS)
    for alg in (KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa1_5):
        wrapped = crypto.wrap_key(alg, dek)
        check(wrapped.key_id == version.id, "wrap names the version")
        check(crypto.unwrap_key(alg, wrapped.encrypted_key).key == dek, f"{alg} round trip")
    sealed = crypto.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"payload")
    check(crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, sealed.ciphertext).plaintext == b"payload", "encrypt/decrypt")
crypto1 = CryptographyClient(v1.id, app, **VAULT_OPTIONS)
wrapped = crypto1.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
tampered = bytearray(wrapped.encrypted_key)
tampered[10] ^= 1
raises(HttpResponseError, lambda: crypto1.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, bytes(tampered)), "tampered unwrap", 400, "BadParameter")
raises(HttpResponseError, lambda: crypto1.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key), "wrong algorithm unwrap", 400)
keys.update_key_properties(name, v1.properties.version, enabled=False)
raises(HttpResponseError, lambda: crypto1.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key), "unwrap with a disabled version", 403, "Forbidden")
keys.update_key_properties(name, v1.properties.version, enabled=True)
check(crypto1.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek, "unwrap once enabled again")
# exp and nbf: a version is usable only between them.
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
expired = keys.update_key_properties(name, v1.properties.version, expires_on=now - datetime.timedelta(days=1))
check(expired.properties.expires_on == now - datetime.timedelta(days=1), "exp kept")
raises(HttpResponseError, lambda: crypto1.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key), "an expired version", 403, "Forbidden")
keys.update_key_properties(name, v1.properties.version, expires_on=now + datetime.timedelta(days=365))
later = keys.update_key_properties(name, v1.properties.version, not_before=now + datetime.timedelta(days=1))
check(later.properties.not_before == now + datetime.timedelta(days=1), "nbf kept")
raises(HttpResponseError, lambda: crypto1.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key), "a version not yet valid", 403, "Forbidden")
keys.update_key_properties(name, v1.properties.version, not_before=now - datetime.timedelta(days=1))
check(crypto1.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek, "usable between nbf and exp")
wrap_only = keys.create_rsa_key(f"wraponly-{suffix}", size=2048, key_operations=["wrapKey"])
wrap_only_crypto = CryptographyClient(wrap_only.id, app, **VAULT_OPTIONS)
w = wrap_only_crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
raises(HttpResponseError, lambda: wrap_only_crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, w.encrypted_key), "an operation key_ops does not allow", 403, "Forbidden")

# ---- rotation policy --------------------------------------------------------------------
policy = keys.get_key_rotation_policy(name)
check(policy.id == f"{VAULT}/keys/{name}/rotationpolicy", "default policy")
actions = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P90D")]
set_policy = keys.update_key_rotation_policy(name, KeyRotationPolicy(expires_in="P1Y", lifetime_actions=actions))
check(set_policy.lifetime_actions[0].action == KeyRotationPolicyAction.rotate, "rotate action kept")
check(set_policy.lifetime_actions[0].time_after_create == "P90D", "trigger kept")
check(keys.get_key_rotation_policy(name).expires_in == "P1Y", "expiry kept")
bad_actions = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="soon")]
raises(HttpResponseError, lambda: keys.update_key_rotation_policy(name, KeyRotationPolicy(lifetime_actions=bad_actions)), "bad duration", 400, "BadParameter")

# ---- soft delete, get deleted, recover, purge -------------------------------------------
doomed = f"doomed-{suffix}"
keys.create_rsa_key(doomed, size=2048)
deleted = keys.begin_delete_key(doomed).result()
check(deleted.recovery_id == f"{VAULT}/deletedkeys/{doomed}", "recovery id")
check(deleted.scheduled_purge_date is not None, "purge date")
raises(ResourceNotFoundError, lambda: keys.get_key(doomed), "a deleted key is not found", 404, "KeyNotFound")
check(keys.get_deleted_key(doomed).name == doomed, "get deleted key")
check(doomed in [k.name for k in keys.list_deleted_keys()], "deleted keys listed")
check(doomed not in [k.name for k in keys.list_properties_of_keys()], "deleted key not listed")
raises(ResourceExistsError, lambda: keys.create_rsa_key(doomed, size=2048), "a deleted name cannot be reused", 409)
keys.begin_recover_deleted_key(doomed).result()
check(keys.get_key(doomed).name == doomed, "recovered")
keys.begin_delete_key(doomed).result()
keys.purge_deleted_key(doomed)
raises(ResourceNotFoundError, lambda: keys.get_deleted_key(doomed), "purged", 404)

# ---- secrets ---------------------------------------------------------------------------
sname = f"legacy-key-{suffix}"
s1 = secrets.set_secret(sname, "c2VjcmV0LWtleS1tYXRlcmlhbC0zMi1ieXRlcy1sb25nIQ==", content_type="application/octet-stream")
check(s1.id.startswith(f"{VAULT}/secrets/{sname}/"), "secret id from the vault URL")
s2 = secrets.set_secret(sname, json.dumps({"password": "hunter2"}), content_type="application/json")
check(secrets.get_secret(sname).value == json.dumps({"password": "hunter2"}), "latest secret")
check(secrets.get_secret(sname, s1.properties.version).value.startswith("c2Vj"), "a secret version")
check(len(list(secrets.list_properties_of_secret_versions(sname))) == 2, "secret versions")
check(sname in [s.name for s in secrets.list_properties_of_secrets()], "secrets listed")
props = secrets.update_secret_properties(sname, s1.properties.version, enabled=False)
check(props.enabled is False, "secret version disabled")
raises(HttpResponseError, lambda: secrets.get_secret(sname, s1.properties.version), "a disabled secret is forbidden", 403, "Forbidden")
secrets.update_secret_properties(sname, s1.properties.version, enabled=True)
check(secrets.get_secret(sname, s1.properties.version).properties.enabled, "enabled again")
raises(ResourceNotFoundError, lambda: secrets.get_secret(f"nope-{suffix}"), "unknown secret", 404, "SecretNotFound")
deleted_secret = secrets.begin_delete_secret(sname).result()
check(deleted_secret.recovery_id == f"{VAULT}/deletedsecrets/{sname}", "secret recovery id")
raises(ResourceNotFoundError, lambda: secrets.get_secret(sname), "a deleted secret is not found", 404, "SecretNotFound")
check(secrets.get_deleted_secret(sname).name == sname, "get deleted secret")
secrets.purge_deleted_secret(sname)

# ---- api-versions ------------------------------------------------------------------------
for version in (KeysApiVersion.V7_4, KeysApiVersion.V7_5):
    old = KeyClient(VAULT, app, api_version=version, **VAULT_OPTIONS)
    check(old.get_key(name).id == v2.id, f"api-version {version.value}")

# ---- authentication ------------------------------------------------------------------
wrong = ClientSecretCredential(CREDS["tenant_id"], CREDS["app"]["client_id"], "not-the-secret", **IDENTITY_OPTIONS)
raises(ClientAuthenticationError, lambda: KeyClient(VAULT, wrong, **VAULT_OPTIONS).get_key(name), "a wrong client secret")
reader = ClientSecretCredential(CREDS["tenant_id"], CREDS["reader"]["client_id"], CREDS["reader"]["client_secret"], **IDENTITY_OPTIONS)
raises(HttpResponseError, lambda: KeyClient(VAULT, reader, **VAULT_OPTIONS).get_key(name), "no access policy", 403, "Forbidden")
workload = WorkloadIdentityCredential(
    tenant_id=CREDS["tenant_id"],
    client_id=CREDS["workload"]["client_id"],
    token_file_path=CREDS["workload"]["token_file"],
    **IDENTITY_OPTIONS,
)
check(KeyClient(VAULT, workload, **VAULT_OPTIONS).get_key(name).id == v2.id, "workload identity")
os.environ["IDENTITY_ENDPOINT"] = CREDS["managed_identity"]["endpoint"]
os.environ["IDENTITY_HEADER"] = CREDS["managed_identity"]["header"]
managed = ManagedIdentityCredential()
check(SecretClient(VAULT, managed, **VAULT_OPTIONS).set_secret(f"mi-{suffix}", "x").value == "x", "managed identity")
os.environ["IDENTITY_HEADER"] = "wrong"
raises(ClientAuthenticationError, lambda: ManagedIdentityCredential().get_token("https://vault.azure.net/.default"), "a wrong identity header")

# ---- faults ----------------------------------------------------------------------------
fault("throttle", retry_after=7)
throttled = raises(HttpResponseError, lambda: keys.get_key(name, retry_total=0), "429 Throttled", 429, "Throttled")
check(throttled.response.headers.get("Retry-After") == "7", "Retry-After sent")
fault("unavailable")
raises(HttpResponseError, lambda: keys.get_key(name, retry_total=0), "503", 503)
check(keys.get_key(name).id == v2.id, "answers again after the faults")

print(f"azure-kv fidelity: {CHECKS} checks passed")
