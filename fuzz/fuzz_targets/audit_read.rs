//! Verifies arbitrary bytes as an audit log: no input may panic, and nothing the fuzzer makes
//! verifies as a record (that would take the audit key's MACs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit::audit::{AuditKey, verify_audit_records};

fuzz_target!(|data: &[u8]| {
    let key = AuditKey::from_bytes([0x5C; 32]);
    if let Ok(report) = verify_audit_records(data, &key, "fuzz") {
        assert_eq!(report.records, 0);
    }
});
