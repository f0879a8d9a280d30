//! Terraform values as the provider keeps them: every attribute is a [`Value`] (known, null or
//! unknown), numbers are [`Num`], and a few helpers decide defaults and equivalence the same
//! way in plan, apply and read.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
pub use tf_provider::value::Value;

/// A string attribute.
pub type VS = Value<String>;
/// A bool attribute.
pub type VB = Value<bool>;
/// A number attribute.
pub type VN = Value<Num>;
/// A set (or list) of strings; each element may itself be unknown during plan.
pub type VSet = Value<Vec<VS>>;

/// A Terraform number. Integers travel as msgpack integers (so the state shows `30`, not
/// `30.0`); anything else as a float. Deserialises from integers, floats and numeric strings
/// (cty encodes very large numbers as strings).
#[derive(Clone, Copy, PartialEq, PartialOrd, Debug, Default)]
pub struct Num(pub f64);

impl Num {
    pub fn int(n: i64) -> Self {
        Num(n as f64)
    }

    /// The value as an integer, if it is one.
    pub fn as_i64(self) -> Option<i64> {
        let v = self.0;
        (v.fract() == 0.0 && v.is_finite() && v >= i64::MIN as f64 && v <= i64::MAX as f64).then_some(v as i64)
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_i64() {
            Some(i) => write!(f, "{i}"),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_i64() {
            Some(i) => s.serialize_i64(i),
            None => s.serialize_f64(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                v.trim().parse::<f64>().map(Num).map_err(|_| E::custom(format!("`{v}` is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Value::Value(s.to_owned())`.
pub fn s(v: impl Into<String>) -> VS {
    Value::Value(v.into())
}

/// An optional API string as a Terraform value (None is null).
pub fn opt_s<T: ToString>(v: Option<T>) -> VS {
    match v {
        Some(v) => Value::Value(v.to_string()),
        None => Value::Null,
    }
}

/// The configured value, or `default` when the configuration leaves it null. Unknown stays
/// unknown.
pub fn or_default<T>(config: &Value<T>, default: T) -> Value<T>
where
    T: Clone,
{
    match config {
        Value::Null => Value::Value(default),
        other => other.clone(),
    }
}

/// Whether a value is wholly known (for a set: every element too).
pub fn set_known(v: &VSet) -> bool {
    match v {
        Value::Unknown => false,
        Value::Null => true,
        Value::Value(items) => items.iter().all(|i| !i.is_unknown()),
    }
}

/// The known strings of a set (unknown or null elements are skipped).
pub fn set_items(v: &VSet) -> Vec<String> {
    match v {
        Value::Value(items) => items.iter().filter_map(|i| i.as_ref_option().cloned()).collect(),
        _ => Vec::new(),
    }
}

/// Builds a set value from strings.
pub fn set_of<I: IntoIterator<Item = String>>(items: I) -> VSet {
    Value::Value(items.into_iter().map(Value::Value).collect())
}

/// Keeps `reference` when it means the same as `fresh` under `normalise` (e.g. an email in
/// another case), so neither apply nor refresh nor import produces a diff that is only
/// normalisation. Otherwise `fresh` wins.
pub fn keep_equivalent<F>(reference: &VS, fresh: VS, normalise: F) -> VS
where
    F: Fn(&str) -> Option<String>,
{
    if let (Value::Value(r), Value::Value(f)) = (reference, &fresh) {
        if r == f {
            return fresh;
        }
        if let (Some(a), Some(b)) = (normalise(r), normalise(f)) {
            if a == b {
                return reference.clone();
            }
        }
    }
    fresh
}

/// [`keep_equivalent`] for sets: the reference set is kept when both normalise to the same
/// set of strings.
pub fn keep_equivalent_set<F>(reference: &VSet, fresh: VSet, normalise: F) -> VSet
where
    F: Fn(&str) -> Option<String>,
{
    if !set_known(reference) || !set_known(&fresh) {
        return fresh;
    }
    let norm = |v: &VSet| -> Option<std::collections::BTreeSet<String>> {
        set_items(v).iter().map(|s| normalise(s)).collect()
    };
    let empty = |v: &VSet| set_items(v).is_empty();
    match (reference, &fresh) {
        (Value::Null, _) | (_, Value::Null) => {
            if empty(reference) && empty(&fresh) {
                reference.clone()
            } else {
                fresh
            }
        }
        _ => match (norm(reference), norm(&fresh)) {
            (Some(a), Some(b)) if a == b => reference.clone(),
            _ => fresh,
        },
    }
}

/// The integer in a number value, if it is a known integer.
pub fn int_of(v: &VN) -> Option<i64> {
    v.as_ref_option().and_then(|n| n.as_i64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> Option<String> {
        Some(s.to_ascii_lowercase())
    }

    #[test]
    fn equivalent_values_keep_the_reference() {
        assert_eq!(keep_equivalent(&s("Alice@X.com"), s("alice@x.com"), lower), s("Alice@X.com"));
        assert_eq!(keep_equivalent(&s("bob@x.com"), s("alice@x.com"), lower), s("alice@x.com"));
        assert_eq!(keep_equivalent(&Value::Null, s("alice@x.com"), lower), s("alice@x.com"));
    }

    #[test]
    fn equivalent_sets_keep_the_reference() {
        let r = set_of(["B.com".to_owned(), "a.com".to_owned()]);
        let f = set_of(["a.com".to_owned(), "b.com".to_owned()]);
        assert_eq!(keep_equivalent_set(&r, f.clone(), lower), r);
        let g = set_of(["a.com".to_owned()]);
        assert_eq!(keep_equivalent_set(&r, g.clone(), lower), g);
        assert_eq!(keep_equivalent_set(&Value::Null, set_of([]), lower), Value::Null);
    }

    #[test]
    fn numbers_serialise_as_integers_when_integral() {
        let v = rmp_serde_like(Num(30.0));
        assert_eq!(v, serde_json::json!(30));
        assert_eq!(rmp_serde_like(Num(1.5)), serde_json::json!(1.5));
        assert_eq!(Num(3.0).as_i64(), Some(3));
        assert_eq!(Num(3.5).as_i64(), None);
    }

    fn rmp_serde_like(n: Num) -> serde_json::Value {
        serde_json::to_value(n).unwrap()
    }
}

/// A block of at most one element (`volume`, `timeouts`, …) as one [`Value`]. Unlike
/// tf-provider's `serde_as_vec`, the whole block list may be unknown (a `dynamic` block whose
/// `for_each` is not known yet): that stays unknown instead of failing to decode.
pub mod single_block {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Value;

    pub fn serialize<T: Serialize, S: Serializer>(value: &Value<T>, serializer: S) -> Result<S::Ok, S::Error> {
        let list: Value<Vec<&T>> = match value {
            Value::Value(v) => Value::Value(vec![v]),
            Value::Null => Value::Value(Vec::new()),
            Value::Unknown => Value::Unknown,
        };
        list.serialize(serializer)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<Value<T>, D::Error> {
        match Value::<Vec<Value<T>>>::deserialize(deserializer)? {
            Value::Unknown => Ok(Value::Unknown),
            Value::Null => Ok(Value::Null),
            Value::Value(items) if items.len() > 1 => Err(D::Error::custom("at most one block is allowed")),
            Value::Value(items) => Ok(items.into_iter().next().unwrap_or(Value::Null)),
        }
    }
}
