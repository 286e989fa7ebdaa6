//! What both stores share: the wraps' JSON form, table-name checks and error mapping.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sealkit_core::dek_store::DekState;
use sealkit_core::{Error, KeyRef, KeyUri, KeyVersion, WrappedKey};

/// The component named in errors.
pub(crate) const COMPONENT: &str = "DEK store";

/// Wraps as stored: a JSON array of `{"key", "version", "wrapped"}` (the wrapped DEK in
/// base64), always written the same way so that a compare-and-swap can compare the text.
pub(crate) fn wraps_json(wraps: &[WrappedKey]) -> String {
    let items: Vec<serde_json::Value> = wraps
        .iter()
        .map(|w| {
            serde_json::json!({
                "key": w.key.uri.as_str(),
                "version": w.key.version.as_str(),
                "wrapped": STANDARD.encode(&w.bytes),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Wraps from their stored form; a row that does not parse is an error naming the DEK.
pub(crate) fn parse_wraps(text: &str, id: &[u8]) -> sealkit_core::Result<Vec<WrappedKey>> {
    let corrupt = |what: &str| {
        Error::invalid_input(format!(
            "the {COMPONENT} row of DEK {} has {what}; restore the table from a backup",
            hex(id)
        ))
    };
    let items: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|_| corrupt("unreadable wraps"))?;
    items
        .iter()
        .map(|item| {
            let field = |name: &str| {
                item.get(name)
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| corrupt("a wrap without its fields"))
            };
            let key = KeyUri::parse(field("key")?)?;
            let version = KeyVersion::new(field("version")?)?;
            let bytes = STANDARD
                .decode(field("wrapped")?)
                .map_err(|_| corrupt("a wrap that is not base64"))?;
            Ok(WrappedKey::new(KeyRef::new(key, version), bytes))
        })
        .collect()
}

/// Lower-case hex, for ids in messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a table name: letters, digits and `_`, not starting with a digit.
pub(crate) fn table_name(table: &str) -> sealkit_core::Result<String> {
    let ok = !table.is_empty()
        && table.len() <= 63
        && !table.starts_with(|c: char| c.is_ascii_digit())
        && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(table.to_string())
    } else {
        Err(Error::misconfigured(format!(
            "DEK store table name {table:?}: use letters, digits and _ (e.g. sealkit_deks)"
        )))
    }
}

/// The state a stored name stands for; an unknown one is a corrupt row.
pub(crate) fn state(name: &str, id: &[u8]) -> sealkit_core::Result<DekState> {
    DekState::parse(name).ok_or_else(|| {
        Error::invalid_input(format!(
            "the {COMPONENT} row of DEK {} has an unknown state {name:?}",
            hex(id)
        ))
    })
}

/// A 16-byte id from a stored value.
pub(crate) fn dek_id(bytes: &[u8]) -> sealkit_core::Result<sealkit_core::dek_store::DekId> {
    bytes.try_into().map_err(|_| {
        Error::invalid_input(format!(
            "a {COMPONENT} row has a {}-byte id, not 16",
            bytes.len()
        ))
    })
}

/// An algorithm from its stored code.
pub(crate) fn algorithm(code: i64, id: &[u8]) -> sealkit_core::Result<sealkit_core::Algorithm> {
    u8::try_from(code)
        .ok()
        .and_then(sealkit_core::Algorithm::from_code)
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "the {COMPONENT} row of DEK {} names an unknown algorithm {code}",
                hex(id)
            ))
        })
}

/// A database failure: an outage to retry (the message says which store).
pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable(COMPONENT, format!("{what}: {e}"))
}
