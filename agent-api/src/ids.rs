//! Ids the agent accepts. They end up in paths, user names, cgroup names and volume labels,
//! so they are checked once, here, and carried as types afterwards.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {kind} id: expected `{prefix}_` and 1 to 60 characters from [a-z0-9]")]
pub struct IdError {
    kind: &'static str,
    prefix: &'static str,
    value: String,
}

/// `<prefix>_` then 1 to 60 lower-case letters or digits.
fn check(kind: &'static str, prefix: &'static str, value: &str) -> Result<(), IdError> {
    let ok = value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|tail| (1..=60).contains(&tail.len()) && tail.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        // Shown in errors: keep what is echoed short and printable.
        let shown: String = value.chars().take(80).filter(|c| !c.is_control()).collect();
        Err(IdError { kind, prefix, value: shown })
    }
}

macro_rules! id_type {
    ($name:ident, $kind:literal, $prefix:literal) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check($kind, $prefix, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The random part after the prefix.
            pub fn tail(&self) -> &str {
                &self.0[$prefix.len() + 1..]
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                check($kind, $prefix, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(HomeserverId, "homeserver", "hs");
id_type!(BackupId, "backup", "bk");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_once() {
        let id = HomeserverId::parse("hs_abc234xyz").unwrap();
        assert_eq!(id.tail(), "abc234xyz");
        for bad in ["", "hs_", "hs_ABC", "hs_a/b", "hs_../x", "bk_abc", "hs_a_b", "hs_a b", &format!("hs_{}", "a".repeat(61))] {
            assert!(HomeserverId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(BackupId::parse("bk_x1").is_ok());
        let json: Result<HomeserverId, _> = serde_json::from_str("\"hs_../../etc\"");
        assert!(json.is_err());
        let err = HomeserverId::parse("hs_\u{1b}[31mred").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
    }
}
