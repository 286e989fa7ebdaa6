"""Drives the Cloud KMS test peer's authentication with Google's official libraries: a
service-account key file the peer made (its token_uri pointing at the peer), used as the
google-cloud-kms client uses it (self-signed JWT access) and through the OAuth2 token endpoint
(google-auth's JWT-bearer grant); anonymous calls and a key the peer does not know are refused.

Usage: python gcp_kms_auth.py http://127.0.0.1:PORT KEY_FILE
"""

import json
import sys
import tempfile

import google.auth.transport.requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account

ENDPOINT, KEY_FILE = sys.argv[1], sys.argv[2]
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
PARENT = "projects/sealkit-test/locations/global"
CHECKS = 0


def check(condition, what):
    global CHECKS
    if not condition:
        raise AssertionError(what)
    CHECKS += 1


def client(credentials):
    return kms.KeyManagementServiceClient(
        transport="rest", credentials=credentials, client_options=ClientOptions(api_endpoint=ENDPOINT)
    )


# 1. The client's own flow with the key file: self-signed JWT access tokens.
signed = service_account.Credentials.from_service_account_file(KEY_FILE, scopes=SCOPES)
ring = client(signed).create_key_ring(request={"parent": PARENT, "key_ring_id": "auth", "key_ring": {}})
check(ring.name == f"{PARENT}/keyRings/auth", "a key-file client creates a key ring")

# 2. The token endpoint: google-auth exchanges a JWT signed by the key at token_uri.
exchanged = service_account.Credentials.from_service_account_file(KEY_FILE, scopes=SCOPES)
exchanged.refresh(google.auth.transport.requests.Request())
check(exchanged.token.startswith("ya29."), f"an access token from the token endpoint: {exchanged.token[:10]}")
check(exchanged.expiry is not None, "the token has an expiry")
bearer = oauth2_credentials.Credentials(token=exchanged.token)
check(client(bearer).get_key_ring(name=ring.name).name == ring.name, "the issued token is accepted")

# 3. Refusals: no credentials, a made-up token, a key the peer does not know. On a 401 the
# client asks its credentials to refresh, which anonymous and bare-token credentials cannot:
# that failure is the client's answer to the 401.
import requests

raw = requests.get(f"{ENDPOINT}/v1/{ring.name}")
check(raw.status_code == 401, f"no token: HTTP {raw.status_code}")
check(raw.json()["error"]["status"] == "UNAUTHENTICATED", "Google's UNAUTHENTICATED body")
check(raw.headers.get("www-authenticate", "").startswith("Bearer"), "a bearer challenge")
for what, creds in [
    ("anonymous", AnonymousCredentials()),
    ("a made-up token", oauth2_credentials.Credentials(token="ya29.made-up")),
]:
    try:
        client(creds).get_key_ring(name=ring.name)
        raise AssertionError(f"{what} was accepted")
    except (exceptions.Unauthorized, google.auth.exceptions.InvalidOperation, google.auth.exceptions.RefreshError):
        check(True, f"{what}: refused")
info = json.load(open(KEY_FILE))
other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
info["private_key"] = other_key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as forged_file:
    json.dump(info, forged_file)
forged = service_account.Credentials.from_service_account_file(forged_file.name, scopes=SCOPES)
try:
    client(forged).get_key_ring(name=ring.name)
    raise AssertionError("a JWT signed by another key was accepted")
except exceptions.Unauthorized:
    check(True, "another key: 401")
forged = service_account.Credentials.from_service_account_file(forged_file.name, scopes=SCOPES)
try:
    forged.refresh(google.auth.transport.requests.Request())
    raise AssertionError("the token endpoint accepted a JWT signed by another key")
except google.auth.exceptions.RefreshError:
    check(True, "the token endpoint refuses another key")

print(f"gcp-kms auth fidelity: {CHECKS} checks passed")
