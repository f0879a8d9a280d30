//! R14: customer passwords. The policy a new password must meet, and the hash that is stored:
//! argon2id with a random salt per password and the platform's pepper as argon2's secret
//! input. The pepper is a key file in `STATE/api`, never in the database, so a stolen database
//! alone cannot be used to guess passwords offline.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use matrixhost_seal::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

use super::{DomainError, DomainResult};

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 128;

/// argon2id parameters (OWASP's first recommendation): 19 MiB of memory, 2 passes, 1 lane.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;

/// Passwords too common to allow, whatever their length (lower case).
const COMMON: &str = include_str!("common_passwords.txt");

/// A password that met the policy. Wiped from memory when dropped; never printed.
pub struct NewPassword(Zeroizing<String>);

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

impl NewPassword {
    /// R14: at least 12 characters, at most 128, not one repeated character, not a well-known
    /// password and not the account's own email address.
    pub fn parse(field: &str, password: &str, email: &str) -> DomainResult<NewPassword> {
        let chars = password.chars().count();
        if chars < MIN_LEN {
            return Err(DomainError::field(field, format!("must be at least {MIN_LEN} characters (R14)")));
        }
        if chars > MAX_LEN {
            return Err(DomainError::field(field, format!("must be at most {MAX_LEN} characters")));
        }
        let lower = password.to_lowercase();
        let first = lower.chars().next().unwrap_or_default();
        if lower.chars().all(|c| c == first) || COMMON.lines().any(|known| known == lower) {
            return Err(DomainError::field(field, "is a well-known password that attackers try first; choose another (R14)"));
        }
        if lower.contains(&email.to_lowercase()) || email.split('@').next().is_some_and(|local| local.len() >= 4 && lower == local.to_lowercase()) {
            return Err(DomainError::field(field, "must not be your email address"));
        }
        Ok(NewPassword(Zeroizing::new(password.to_owned())))
    }

    /// The password itself, to hand to the homeserver that stores its own hash.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The pepper and the hasher built on it.
pub struct Hasher {
    pepper: SecretBox<Vec<u8>>,
    /// A hash of no one's password, for [`Hasher::verify_nothing`].
    decoy: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(***)")
    }
}

impl Hasher {
    pub fn new(pepper: SecretBox<Vec<u8>>) -> Hasher {
        Hasher { pepper, decoy: std::sync::OnceLock::new() }
    }

    fn argon2(&self) -> DomainResult<Argon2<'_>> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).map_err(DomainError::internal)?;
        Argon2::new_with_secret(self.pepper.expose_secret(), Algorithm::Argon2id, Version::V0x13, params).map_err(DomainError::internal)
    }

    /// The PHC string to store: algorithm, parameters, salt and hash; never the password.
    pub fn hash(&self, password: &NewPassword) -> DomainResult<String> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = self.argon2()?.hash_password(password.0.as_bytes(), &salt).map_err(DomainError::internal)?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches `stored`. The comparison inside argon2 is constant-time.
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else { return false };
        self.argon2().is_ok_and(|a| a.verify_password(password.as_bytes(), &parsed).is_ok())
    }

    /// Spends the time of a real check, so an unknown account answers as slowly as a known one.
    pub fn verify_nothing(&self, password: &str) {
        let decoy = self.decoy.get_or_init(|| {
            let random = NewPassword(Zeroizing::new(crate::ids::random_suffix()));
            self.hash(&random).unwrap_or_default()
        });
        let _ = self.verify(password, decoy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(pepper: u8) -> Hasher {
        Hasher::new(SecretBox::new(Box::new(vec![pepper; 32])))
    }

    #[test]
    fn the_policy_names_the_field_and_the_rule() {
        let short = NewPassword::parse("password", "short", "a@example.com").unwrap_err().to_string();
        assert!(short.starts_with("password: ") && short.contains("12") && short.contains("R14"), "{short}");
        assert!(NewPassword::parse("password", "Password1234", "a@example.com").unwrap_err().to_string().contains("well-known"));
        assert!(NewPassword::parse("password", "aaaaaaaaaaaaaaaaa", "a@example.com").unwrap_err().to_string().contains("well-known"));
        assert!(NewPassword::parse("password", "xx-alice@example.com", "alice@example.com").is_err());
        assert!(NewPassword::parse("password", &"long enough ".repeat(11), "a@example.com").is_err());
        assert!(NewPassword::parse("password", "plum harbour ninety", "a@example.com").is_ok());
    }

    #[test]
    fn hashes_are_argon2id_salted_and_peppered() {
        let h = hasher(7);
        let pw = NewPassword::parse("password", "plum harbour ninety", "a@example.com").unwrap();
        let a = h.hash(&pw).unwrap();
        let b = h.hash(&pw).unwrap();
        assert!(a.starts_with(&format!("$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={LANES}$")), "{a}");
        assert_ne!(a, b, "a salt per password");
        assert!(!a.contains("plum"));
        assert!(h.verify("plum harbour ninety", &a));
        assert!(!h.verify("plum harbour nineti", &a));
        assert!(!hasher(8).verify("plum harbour ninety", &a), "another pepper does not verify");
        assert!(!h.verify("plum harbour ninety", "not a hash"));
    }
}
