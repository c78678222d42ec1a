//! Fault-injection points, for the tests that prove a write is all or
//! nothing whatever step a crash or a failing disk interrupts.
//!
//! Compiled in only with the `fault-injection` cargo feature (the
//! end-to-end test package enables it for its `vaultd-under-test`); in any
//! other build [`hit`] is an empty function. With the feature, and
//! `VAULT_FAULT_FILE` naming a file, every point reads that file when it is
//! reached: a line `POINT fail` makes the step fail with an I/O error,
//! `POINT fail-once` too but removes the file first (so that the undo that
//! follows succeeds), and `POINT abort` ends the process at once, as
//! `kill -9` would (no destructor runs, nothing more is flushed). No file, no fault: a test
//! arms a fault by writing the file and disarms it by removing it.
//!
//! Points (in the order a commit reaches them): `store.apply` (before a
//! commit's changes are applied), `store.sync-keys` (before new keys in
//! the key-slot file are synced), `store.flush` (before sled's log is
//! flushed), `store.shred` (after the flush, before key slots are
//! overwritten).

/// Reaches fault point `point`: fails or ends the process if the fault
/// file says so.
#[cfg(feature = "fault-injection")]
pub fn hit(point: &'static str) -> std::io::Result<()> {
    static FILE: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    let Some(file) = FILE.get_or_init(|| std::env::var_os("VAULT_FAULT_FILE")) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return Ok(());
    };
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [p, "fail"] if *p == point => {
                return Err(std::io::Error::other(format!("injected fault at {point}")));
            }
            [p, "fail-once"] if *p == point => {
                let _ = std::fs::remove_file(file);
                return Err(std::io::Error::other(format!("injected fault at {point}")));
            }
            [p, "abort"] if *p == point => std::process::abort(),
            _ => {}
        }
    }
    Ok(())
}

/// Reaches fault point `point` (nothing: built without `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hit(_point: &'static str) -> std::io::Result<()> {
    Ok(())
}
