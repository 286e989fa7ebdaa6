//! Mapping of file-system errors onto the core's error kinds.

use sealkit_core::Error;

/// Maps an I/O error on `path` to the core's kinds with a message that says what to do.
pub(crate) fn io_error(action: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let at = path.display();
    match e.kind() {
        K::NotFound => Error::not_found("local", format!("{at} (while trying to {action})")),
        K::PermissionDenied => Error::permission_denied(
            "local",
            format!(
                "cannot {action} {at}: permission denied; check the owner and mode of the key store"
            ),
        ),
        _ => Error::unavailable("local", format!("cannot {action} {at}: {e}")),
    }
}
