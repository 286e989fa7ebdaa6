//! Operating-system randomness, buffered per thread.
//!
//! One `getrandom` call costs about as much as sealing a small field, so nonces are drawn from
//! a 4 KiB per-thread buffer refilled from the OS. The buffer is discarded when the process id
//! changes, so a forked child never reuses its parent's bytes.

use std::cell::RefCell;

use sealkit_core::{Error, Result, SecureRandom};
use zeroize::Zeroize;

const BUFFER: usize = 4096;

struct Pool {
    bytes: [u8; BUFFER],
    pos: usize,
    pid: u32,
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; BUFFER], pos: BUFFER, pid: 0 }) };
}

/// The operating system's CSPRNG behind a per-thread buffer. See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

fn os_fill(dest: &mut [u8]) -> Result<()> {
    getrandom::fill(dest)
        .map_err(|e| Error::unavailable("os-random", format!("getrandom failed: {e}")))
}

impl SecureRandom for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<()> {
        if dest.len() > BUFFER / 4 {
            return os_fill(dest);
        }
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let pid = std::process::id();
            if pool.pid != pid || pool.pos + dest.len() > BUFFER {
                os_fill(&mut pool.bytes)?;
                pool.pos = 0;
                pool.pid = pid;
            }
            let start = pool.pos;
            dest.copy_from_slice(&pool.bytes[start..start + dest.len()]);
            // Bytes handed out are erased from the buffer so they cannot be handed out twice.
            pool.bytes[start..start + dest.len()].zeroize();
            pool.pos += dest.len();
            Ok(())
        })
    }
}
