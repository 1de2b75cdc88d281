//! A stricter reading of request bodies than JSON itself: a duplicated key
//! (which serde would resolve as "last wins", differently from other
//! parsers) and a NUL inside a string (which the kernel would silently cut
//! at) are refused, so what the client meant is what the kernel gets.

use std::collections::HashSet;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Check that `input` is JSON with no duplicated object key and no NUL in
/// any string or key; the error says which.
pub fn check(input: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(input);
    Strict.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// Walks one value, checking as it goes; keeps nothing but the keys of the
/// object being read.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn no_nul<E: de::Error>(s: &str, what: &str) -> Result<(), E> {
    if s.contains('\0') {
        return Err(E::custom(format!(
            "{what} {s:?} contains NUL (\\u0000), which the kernel would cut the string at; remove it"
        )));
    }
    Ok(())
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        no_nul(s, "the string")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strict)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key, "the key")?;
            if keys.contains(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key {key:?} in one object; send each key once"
                )));
            }
            map.next_value_seed(Strict)?;
            keys.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn duplicates_and_nul_are_refused_the_rest_passes() {
        assert!(check(r#"{"a": 1, "b": [1, {"a": 2}], "c": "x"}"#).is_ok());
        assert!(check("null").is_ok());
        let e = check(r#"{"dev-name": "a", "dev-name": "b"}"#).unwrap_err();
        assert!(e.contains("duplicate key \"dev-name\""), "{e}");
        let e = check(r#"{"x": [{"k": 1, "k": 2}]}"#).unwrap_err();
        assert!(e.contains("\"k\""), "{e}");
        let e = check(r#"{"name": "ethtool\u0000xx"}"#).unwrap_err();
        assert!(e.contains("NUL"), "{e}");
        assert!(check(r#"{"a\u0000": 1}"#).is_err());
        assert!(check("{not json").is_err());
        assert!(check("1 2").is_err());
    }
}
