//! Wycheproof AEAD vectors, run against every backend.

use sealkit_core::backend::all_backends;
use sealkit_core::{AeadBackend, Algorithm};
use wycheproof::TestResult;
use wycheproof::aead::{TestName, TestSet};

fn run(name: TestName, algorithm: Algorithm, backend: &dyn AeadBackend) -> usize {
    let set = TestSet::load(name).expect("wycheproof set loads");
    let mut checked = 0;
    for group in &set.test_groups {
        // Sealkit uses 256-bit keys, the suite's nonce size and 128-bit tags only.
        if group.key_size != 256
            || group.nonce_size != algorithm.nonce_len() * 8
            || group.tag_size != 128
        {
            continue;
        }
        for test in &group.tests {
            let key: [u8; 32] = test.key.as_slice().try_into().unwrap();
            let aead = backend.prepare(algorithm, &key).unwrap();
            let tag: [u8; 16] = match test.tag.as_slice().try_into() {
                Ok(t) => t,
                Err(_) => continue,
            };
            let mut buf = test.ct.to_vec();
            let opened = aead.open_in_place(&test.nonce, &test.aad, &mut buf, &tag);
            match test.result {
                TestResult::Valid => {
                    opened.unwrap_or_else(|e| panic!("{} tc {}: {e}", backend.name(), test.tc_id));
                    assert_eq!(buf, test.pt.as_slice(), "tc {}", test.tc_id);
                    let mut sealed = test.pt.to_vec();
                    let got = aead
                        .seal_in_place(&test.nonce, &test.aad, &mut sealed)
                        .unwrap();
                    assert_eq!(sealed, test.ct.as_slice(), "tc {}", test.tc_id);
                    assert_eq!(got, tag, "tc {}", test.tc_id);
                }
                TestResult::Invalid => {
                    assert!(
                        opened.is_err(),
                        "{} accepted invalid tc {}",
                        backend.name(),
                        test.tc_id
                    )
                }
                TestResult::Acceptable => {}
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn aes_256_gcm_all_backends() {
    for backend in all_backends() {
        let n = run(TestName::AesGcm, Algorithm::Aes256Gcm, backend);
        assert!(n > 50, "{}: only {n} vectors ran", backend.name());
    }
}

#[test]
fn xchacha20_poly1305_all_backends() {
    for backend in all_backends() {
        let n = run(
            TestName::XChaCha20Poly1305,
            Algorithm::XChaCha20Poly1305,
            backend,
        );
        assert!(n > 50, "{}: only {n} vectors ran", backend.name());
    }
}
