//! Resource ids: a kind prefix and 20 random base-32 characters (100 bits).

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

pub fn random_suffix() -> String {
    let mut rng = rand::thread_rng();
    (0..20).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_suffix())
}

/// Whether a string has the shape of an id (used to vet page tokens).
pub fn looks_like_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
