//! AppRole login, and a policy that allows encrypt but not decrypt.

use sealkit_conformance::peers::unique;
use sealkit_core::provider::{KeyAdmin, KeyEncryption};
use sealkit_core::{EncryptionContext, Error, KeyUri};
use sealkit_vault::{VaultAuth, VaultSettings, VaultTransit};
use vaultrs::api::auth::approle::requests::SetAppRoleRequest;
use vaultrs::api::token::requests::CreateTokenRequest;

use crate::support::{root_client, root_config};

fn ctx() -> EncryptionContext {
    EncryptionContext::from_pairs([("table", "customers")]).unwrap()
}

/// Least privilege for a Transit key used by Sealkit (as documented in docs/providers/vault.md).
fn policy(name: &str, decrypt: bool) -> String {
    let mut hcl = format!(
        r#"path "transit/datakey/plaintext/{name}" {{ capabilities = ["update"] }}
path "transit/encrypt/{name}" {{ capabilities = ["update"] }}
path "transit/keys/{name}" {{ capabilities = ["read"] }}
"#
    );
    if decrypt {
        hcl.push_str(&format!(
            r#"path "transit/decrypt/{name}" {{ capabilities = ["update"] }}
path "transit/rewrap/{name}" {{ capabilities = ["update"] }}
"#
        ));
    }
    hcl
}

#[tokio::test]
async fn approle_login_with_the_documented_least_privilege_policy() {
    let (Some(root), Some(client)) = (root_config(), root_client()) else {
        return;
    };
    let name = unique("approle-key");
    let key = KeyUri::parse(&format!("vault-transit://transit/{name}")).unwrap();
    VaultTransit::new(root.clone())
        .create_key(&key)
        .await
        .unwrap();
    let policy_name = unique("sealkit-app");
    vaultrs::sys::policy::set(&client, &policy_name, &policy(&name, true))
        .await
        .unwrap();
    let mount = unique("approle");
    vaultrs::sys::auth::enable(&client, &mount, "approle", None)
        .await
        .unwrap();
    let role = "sealkit";
    vaultrs::auth::approle::role::set(
        &client,
        &mount,
        role,
        Some(SetAppRoleRequest::builder().token_policies(vec![policy_name])),
    )
    .await
    .unwrap();
    let role_id = vaultrs::auth::approle::role::read_id(&client, &mount, role)
        .await
        .unwrap()
        .role_id;
    let secret_id = vaultrs::auth::approle::role::secret::generate(&client, &mount, role, None)
        .await
        .unwrap()
        .secret_id;
    let config = VaultSettings::new(
        root.address(),
        VaultAuth::AppRole {
            mount: mount.clone(),
            role_id,
            secret_id: secret_id.into(),
        },
    );
    let app = VaultTransit::new(config);
    let g = app.generate_data_key(&key, &ctx()).await.unwrap();
    assert_eq!(
        app.unwrap(&g.wrapped, &ctx()).await.unwrap().expose(),
        g.plaintext.expose()
    );
    // The policy grants no key administration.
    let err = app.rotate_key(&key).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    // A wrong secret id fails to log in with a permission error.
    let bad = VaultSettings::new(
        root.address(),
        VaultAuth::AppRole {
            mount,
            role_id: "nope".into(),
            secret_id: "nope".to_string().into(),
        },
    );
    let err = VaultTransit::new(bad)
        .generate_data_key(&key, &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PermissionDenied { .. } | Error::InvalidInput { .. }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn encrypt_only_policy_is_denied_decrypt_with_a_clear_message() {
    let (Some(root), Some(client)) = (root_config(), root_client()) else {
        return;
    };
    let name = unique("encrypt-only");
    let key = KeyUri::parse(&format!("vault-transit://transit/{name}")).unwrap();
    VaultTransit::new(root.clone())
        .create_key(&key)
        .await
        .unwrap();
    let policy_name = unique("encrypt-only");
    vaultrs::sys::policy::set(&client, &policy_name, &policy(&name, false))
        .await
        .unwrap();
    let token = vaultrs::token::new(
        &client,
        Some(CreateTokenRequest::builder().policies(vec![policy_name])),
    )
    .await
    .unwrap()
    .client_token;
    let writer = VaultTransit::new(VaultSettings::new(
        root.address(),
        VaultAuth::Token(token.into()),
    ));
    let g = writer.generate_data_key(&key, &ctx()).await.unwrap();
    let err = writer.unwrap(&g.wrapped, &ctx()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{text}");
    assert!(
        text.contains(&name) && text.contains("decrypt"),
        "the message names the key and the operation: {text}"
    );
    // A wrong token entirely.
    let stranger = VaultTransit::new(VaultSettings::new(
        root.address(),
        VaultAuth::Token("not-a-token".to_string().into()),
    ));
    assert!(matches!(
        stranger.generate_data_key(&key, &ctx()).await,
        Err(Error::PermissionDenied { .. })
    ));
}
