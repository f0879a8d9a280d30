//! The master key and sealing. Secrets the control plane must keep for later (an initial
//! password until the account exists; per-volume keys in the runtime) are sealed with
//! XChaCha20-Poly1305 under the master key, bound to the record they belong to.

use std::path::Path;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;

pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// Loads the master key (64 hex characters), creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            crate::auth::write_secret_file(path, hex::encode(key).as_bytes())?;
            tracing::info!(path = %path.display(), "created a new master key");
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the master key {}", path.display()))?;
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32).with_context(|| {
            format!("the master key {} must hold 64 hex characters", path.display())
        })?;
        Ok(Self { cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)) })
    }

    /// `hex(nonce || ciphertext)`, authenticated together with `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        Ok(hex::encode([nonce.as_slice(), &sealed].concat()))
    }

    pub fn open(&self, sealed: &str, context: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = hex::decode(sealed).context("sealed value is not hex")?;
        anyhow::ensure!(bytes.len() > 24, "sealed value is too short");
        let (nonce, ciphertext) = bytes.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| anyhow::anyhow!("sealed value failed authentication (wrong key, wrong record or tampered)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_refuses_tampering_or_another_context() {
        let dir = std::env::temp_dir().join(format!("mh-sealer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("master.key");
        let sealer = Sealer::load_or_create(&key).unwrap();
        let sealed = sealer.seal(b"hunter2hunter2", "ru_1").unwrap();
        assert!(!sealed.contains(&hex::encode(b"hunter2")));
        assert_eq!(sealer.open(&sealed, "ru_1").unwrap(), b"hunter2hunter2");
        assert!(sealer.open(&sealed, "ru_2").is_err());
        let mut bad = sealed.into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert!(sealer.open(std::str::from_utf8(&bad).unwrap(), "ru_1").is_err());
        // Reloading the same file yields the same key.
        let again = Sealer::load_or_create(&key).unwrap();
        let s2 = again.seal(b"x", "c").unwrap();
        assert_eq!(sealer.open(&s2, "c").unwrap(), b"x");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
