//! The development root key file: `vault-dev-root-key-v1 <base64url of 32 bytes>`.
//!
//! It is written once, with mode 0600, by `vaultd init` (or by the first
//! `vaultd serve` on an empty data directory), and refused if anyone but its
//! owner can read it. It is for development only: anyone who can read it can
//! read the vault. Shamir shares and an HSM replace it in production.

use super::keys::{KEY_LEN, RootKey};
use super::random_array;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const HEADER: &str = "vault-dev-root-key-v1";

/// Why the root key file could not be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// There is no file at the path.
    #[error("root key file {0} does not exist")]
    Missing(PathBuf),
    /// Group or others may access the file.
    #[error(
        "root key file {path} has mode {mode:o}: it must be readable by its owner only (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a root key file.
    #[error("root key file {0} is malformed")]
    Malformed(PathBuf),
    /// Reading or writing failed.
    #[error("root key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The random generator failed.
    #[error("random generator unavailable")]
    Random,
}

/// Writes a new random root key to `path` (which must not exist), mode 0600.
pub fn create_dev_key_file(path: &Path) -> Result<(), RootKeyError> {
    let io = |source| RootKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let key = Zeroizing::new(random_array::<KEY_LEN>().map_err(|_| RootKeyError::Random)?);
    let mut text = Zeroizing::new(String::with_capacity(80));
    text.push_str(HEADER);
    text.push(' ');
    URL_SAFE_NO_PAD.encode_string(key.as_ref(), &mut text);
    text.push('\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Reads the root key from `path`.
pub fn load_dev_key_file(path: &Path) -> Result<RootKey, RootKeyError> {
    let io = |source| RootKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RootKeyError::Missing(path.to_owned()));
        }
        Err(e) => return Err(io(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(RootKeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    let malformed = || RootKeyError::Malformed(path.to_owned());
    let encoded = text
        .trim()
        .strip_prefix(HEADER)
        .ok_or_else(malformed)?
        .trim();
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(malformed());
    }
    key.copy_from_slice(&bytes);
    Ok(RootKey::from_bytes(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_refuse_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/root.key");
        create_dev_key_file(&path).unwrap();
        assert!(load_dev_key_file(&path).is_ok());
        assert!(
            matches!(create_dev_key_file(&path), Err(RootKeyError::Io { .. })),
            "never overwrites"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                load_dev_key_file(&path),
                Err(RootKeyError::Permissions { .. })
            ));
        }
        assert!(matches!(
            load_dev_key_file(&dir.path().join("none")),
            Err(RootKeyError::Missing(_))
        ));
    }

    #[test]
    fn malformed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        create_dev_key_file(&path).unwrap();
        std::fs::write(&path, "vault-dev-root-key-v1 AAAA\n").unwrap();
        assert!(matches!(
            load_dev_key_file(&path),
            Err(RootKeyError::Malformed(_))
        ));
    }
}
