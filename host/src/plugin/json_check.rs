//! The check every text a plugin hands out passes (a call's document, each
//! streamed item, an event's payload): one JSON value that a client's
//! parser reads.
//!
//! `serde::de::IgnoredAny` checks only the grammar: it lets through
//! nesting of any depth, `\ud800` (a lone surrogate, no character) and
//! `1e400` (no finite number), which serde_json and parsers like it then
//! refuse, and with them the whole answer they sit in. [`Checked`] walks
//! the value as a `serde_json::Value` would be built, without building
//! it: nesting at most 128 (serde_json's limit), escapes that are
//! characters, numbers within f64.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value, walked whole and then forgotten.
pub(crate) struct Checked;

/// Whether `text` is exactly one JSON value a client can read.
pub(crate) fn check(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<Checked>(text).map(drop)
}

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Walk)
    }
}

struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted exactly when serde_json builds a `Value` from the text
    /// (the oracle), over the grammar's corners and what `IgnoredAny`
    /// lets through.
    #[test]
    fn accepts_what_serde_json_reads_as_a_value_and_nothing_else() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases = [
            "null".to_owned(),
            "true".into(),
            "-0".into(),
            "1.5e300".into(),
            "18446744073709551615".into(),
            "-9223372036854775808".into(),
            "1e400".into(),
            "-1e999".into(),
            r#""\ud83d\ude00""#.into(),
            r#""\ud800""#.into(),
            r#""\udc00x""#.into(),
            r#"{"a":[1,{"b":"\n"}],"":{}}"#.into(),
            r#"{"a":1,}"#.into(),
            "[1 2]".into(),
            "01".into(),
            "".into(),
            " 1 ".into(),
            "1 2".into(),
            deep(128),
            deep(129),
            deep(200),
            format!("{}1{}", "{\"k\":".repeat(127), "}".repeat(127)),
            format!("{}1{}", "{\"k\":".repeat(129), "}".repeat(129)),
        ];
        for text in &cases {
            let value = serde_json::from_str::<serde_json::Value>(text);
            assert_eq!(
                check(text).is_ok(),
                value.is_ok(),
                "{text:.40}: serde_json says {value:?}"
            );
        }
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&deep(200)).is_ok(),
            "IgnoredAny, the check before, lets this through"
        );
    }
}
