//! Sealing secrets at rest: XChaCha20-Poly1305 under a 256-bit key kept in a file, each sealed
//! value bound to the record it belongs to (the AEAD's associated data), so a sealed value
//! copied onto another record does not open.
//!
//! Two keys use this, and neither process can read the other's:
//! * the node agent's master key seals volume keys and backup data keys;
//! * the control plane's secrets key seals what it must keep for later (Synapse secrets, the
//!   service account's token, an initial password until its account exists).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
pub use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the key file {path}: {source}")]
    ReadKey { path: String, source: std::io::Error },
    #[error("cannot write the key file {path}: {source}")]
    WriteKey { path: String, source: std::io::Error },
    #[error("the key file {path} must hold 64 hex characters")]
    BadKey { path: String },
    #[error("sealing failed")]
    Seal,
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value failed authentication (wrong key, wrong record or tampered)")]
    Authentication,
}

pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// Loads the key (64 hex characters), creating it (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let key = load_or_create_key(path)?;
        Ok(Self { cipher: XChaCha20Poly1305::new(Key::from_slice(key.expose_secret())) })
    }

    /// `hex(nonce || ciphertext)`, authenticated together with `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self.cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() }).map_err(|_| SealError::Seal)?;
        Ok(hex::encode([nonce.as_slice(), &sealed].concat()))
    }

    /// The plaintext, in a buffer that is wiped when dropped.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let bytes = hex::decode(sealed).map_err(|_| SealError::Malformed)?;
        if bytes.len() <= 24 {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Authentication)
    }

    /// [`Sealer::open`] for a sealed UTF-8 string.
    pub fn open_string(&self, sealed: &str, context: &str) -> Result<Zeroizing<String>, SealError> {
        let plain = self.open(sealed, context)?;
        String::from_utf8(plain.to_vec()).map(Zeroizing::new).map_err(|_| SealError::Malformed)
    }
}

/// A 256-bit key kept as 64 hex characters in `path`, made (mode 0600) on first use. The
/// sealing key uses it, and so does any other key that must stay outside the database (the
/// password pepper).
pub fn load_or_create_key(path: &Path) -> Result<SecretBox<Vec<u8>>, SealError> {
    let shown = path.display().to_string();
    if !path.exists() {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        let text = Zeroizing::new(hex::encode(key.as_ref()));
        write_secret_file(path, text.as_bytes()).map_err(|source| SealError::WriteKey { path: shown.clone(), source })?;
        tracing::info!(path = %shown, "created a new key file");
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| SealError::ReadKey { path: shown.clone(), source })?);
    let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32).ok_or(SealError::BadKey { path: shown })?;
    Ok(SecretBox::new(Box::new(bytes)))
}

/// Writes a secret through a fresh 0600 temporary file (created exclusively, so a symlink
/// planted at its name is never followed) renamed over `path`, synced before it is visible.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_refuses_tampering_or_another_context() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        let sealer = Sealer::load_or_create(&key).unwrap();
        let sealed = sealer.seal(b"hunter2hunter2", "ru_1").unwrap();
        assert!(!sealed.contains(&hex::encode(b"hunter2")));
        assert_eq!(sealer.open(&sealed, "ru_1").unwrap().as_slice(), b"hunter2hunter2");
        assert!(matches!(sealer.open(&sealed, "ru_2"), Err(SealError::Authentication)));
        let mut bad = sealed.into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert!(sealer.open(std::str::from_utf8(&bad).unwrap(), "ru_1").is_err());
        assert!(matches!(sealer.open("zz", "ru_1"), Err(SealError::Malformed)));
        // Reloading the same file yields the same key.
        let again = Sealer::load_or_create(&key).unwrap();
        let s2 = again.seal(b"x", "c").unwrap();
        assert_eq!(sealer.open_string(&s2, "c").unwrap().as_str(), "x");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(format!("{sealer:?}"), "Sealer(***)");
    }

    #[test]
    fn a_bad_key_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "not hex").unwrap();
        let err = Sealer::load_or_create(&key).unwrap_err().to_string();
        assert!(err.contains(&key.display().to_string()) && err.contains("64 hex"), "{err}");
    }

    #[test]
    fn secret_files_never_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let target = dir.path().join("secret");
        std::os::unix::fs::symlink(&victim, target.with_extension("tmp")).unwrap();
        write_secret_file(&target, b"s").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(std::fs::read(&target).unwrap(), b"s");
    }
}
