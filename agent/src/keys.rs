//! The agent's keys (R2, R4). The master key (`agent/master.key`, root 0600) seals every
//! volume key and every backup's data key. Only the agent reads it; the control plane never
//! holds a volume key, sealed or not.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use matrixhost_agent_api::HomeserverId;
use matrixhost_seal::Sealer;

use crate::volume::VolumeKey;

#[derive(Debug)]
pub struct Keys {
    sealer: Sealer,
    /// `agent/keys`: `<id>.key`, each a volume key sealed to its homeserver.
    dir: PathBuf,
}

fn context(id: &HomeserverId) -> String {
    format!("volume-key:{id}")
}

impl Keys {
    pub fn open(master_key: &Path, dir: PathBuf) -> Result<Keys> {
        let sealer = Sealer::load_or_create(master_key)?;
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Keys { sealer, dir })
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    fn path(&self, id: &HomeserverId) -> PathBuf {
        self.dir.join(format!("{id}.key"))
    }

    pub fn has_volume_key(&self, id: &HomeserverId) -> bool {
        self.path(id).exists()
    }

    /// The volume's key. With `create`, a missing one is made from the OS CSPRNG and stored
    /// sealed; without, a missing key is an error (a new key would not open an existing volume).
    pub fn volume_key(&self, id: &HomeserverId, create: bool) -> Result<VolumeKey> {
        let path = self.path(id);
        match fs::read_to_string(&path) {
            Ok(sealed) => {
                let plain = self.sealer.open(sealed.trim(), &context(id)).with_context(|| format!("cannot unseal {}", path.display()))?;
                VolumeKey::from_bytes(&plain)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = VolumeKey::generate();
                let sealed = self.sealer.seal(key.as_bytes(), &context(id))?;
                matrixhost_seal::write_secret_file(&path, sealed.as_bytes()).with_context(|| format!("cannot store {}", path.display()))?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("the key of volume {id} is missing ({})", path.display())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Deletes the sealed key: without it the volume's data cannot be read again.
    pub fn forget_volume_key(&self, id: &HomeserverId) -> Result<()> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete the key of volume {id}")),
        }
    }

    /// Homeservers with a stored key.
    pub fn list(&self) -> Result<Vec<HomeserverId>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(|| format!("cannot list {}", self.dir.display()))? {
            if let Some(Ok(id)) = entry?.file_name().to_str().and_then(|n| n.strip_suffix(".key")).map(HomeserverId::parse) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_sealed_and_bound_to_their_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = Keys::open(&tmp.path().join("master.key"), tmp.path().join("keys")).unwrap();
        let a = HomeserverId::parse("hs_a").unwrap();
        let b = HomeserverId::parse("hs_b").unwrap();
        assert!(keys.volume_key(&a, false).is_err(), "no key is invented for an existing volume");
        let k1 = keys.volume_key(&a, true).unwrap();
        let k2 = keys.volume_key(&a, false).unwrap();
        assert_eq!(k1.as_bytes(), k2.as_bytes());
        let stored = fs::read_to_string(tmp.path().join("keys/hs_a.key")).unwrap();
        assert!(!stored.contains(&hex::encode(k1.as_bytes())), "stored sealed");
        // Copied onto another volume, the sealed key does not open.
        fs::write(tmp.path().join("keys/hs_b.key"), stored).unwrap();
        assert!(keys.volume_key(&b, false).is_err());
        assert_eq!(keys.list().unwrap().len(), 2);
        keys.forget_volume_key(&a).unwrap();
        keys.forget_volume_key(&a).unwrap();
        assert!(!keys.has_volume_key(&a));
    }
}
