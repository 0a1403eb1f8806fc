//! The cookie signing key: read from a file shared by replicas, created when missing.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tower_sticky::affinity::cookie::Key;

/// 64 bytes: the size `cookie::Key` derives its signing and encryption keys from.
const KEY_LEN: usize = 64;

/// Reads the key in `path`; if the file does not exist, creates it (mode 0600) with a fresh random
/// key. The key itself is never printed.
pub(crate) fn load_or_create(path: &Path) -> Result<Key, String> {
    match OpenOptions::new().read(true).open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Key::try_from(bytes.as_slice()).map_err(|_| {
                format!(
                    "{} holds {} bytes; a cookie key needs at least {KEY_LEN}",
                    path.display(),
                    bytes.len()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(key.master())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "gateway: created a new cookie key in {} (mode 0600)",
                path.display()
            );
            Ok(key)
        }
        Err(e) => Err(format!("cannot open {}: {e}", path.display())),
    }
}
