//! JSON text written straight into a `String`: the decoder's output. It
//! escapes exactly as `serde_json` does, so text from here and text from a
//! serialised `Value` agree byte for byte on the same content.

use std::fmt::Write as _;

/// A JSON object's members being written: puts the commas in.
pub(super) struct Members {
    first: bool,
}

impl Members {
    /// Members of an object whose `{` is already written.
    pub fn new() -> Self {
        Self { first: true }
    }

    /// Write `"name":` (with the comma before it when needed).
    pub fn key(&mut self, out: &mut String, name: &str) {
        self.comma(out);
        string(out, name);
        out.push(':');
    }

    /// Write a key already quoted, with its colon (`"name":`).
    #[inline]
    pub fn quoted_key(&mut self, out: &mut String, key: &str) {
        self.comma(out);
        out.push_str(key);
    }

    /// Write `"attr-N":`, the key of an attribute the spec does not know.
    pub fn unknown_key(&mut self, out: &mut String, kind: u16) {
        self.comma(out);
        out.push_str("\"attr-");
        out.push_str(itoa::Buffer::new().format(kind));
        out.push_str("\":");
    }

    #[inline]
    fn comma(&mut self, out: &mut String) {
        if !std::mem::replace(&mut self.first, false) {
            out.push(',');
        }
    }
}

/// A JSON array's items being written: puts the commas in.
pub(super) struct Items {
    first: bool,
}

impl Items {
    /// Items of an array whose `[` is already written.
    pub fn new() -> Self {
        Self { first: true }
    }

    /// Before the next item.
    #[inline]
    pub fn next(&mut self, out: &mut String) {
        if !std::mem::replace(&mut self.first, false) {
            out.push(',');
        }
    }
}

/// `s` as a JSON string.
pub(super) fn string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        // Only ASCII bytes are escaped, so `i` is on a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `s` as a JSON string, on its own.
pub(super) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    string(&mut out, s);
    out
}

/// An unsigned number.
pub(super) fn uint(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// A signed number.
pub(super) fn int(out: &mut String, v: i64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Bytes as a JSON string of two lower-case hex digits each, `sep`
/// between them.
pub(super) fn hex(out: &mut String, bytes: &[u8], sep: Option<char>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 3 + 2);
    out.push('"');
    for (i, b) in bytes.iter().enumerate() {
        if i > 0
            && let Some(c) = sep
        {
            out.push(c);
        }
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The escapes must be `serde_json`'s own: clients parse this text,
    /// and the decoder's text is compared with serialised values.
    #[test]
    fn strings_escape_as_serde_json_does() {
        let samples = [
            "plain",
            "",
            "quote \" back \\ slash",
            "\n\r\t\u{8}\u{c}\u{0}\u{1}\u{1f}\u{7f}",
            "é ü 日本 \u{fffd}",
            "end\\",
        ];
        for s in samples {
            let mut out = String::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap_or_default(), "{s:?}");
        }
    }

    #[test]
    fn numbers_and_hex() {
        let mut out = String::new();
        uint(&mut out, u64::MAX);
        out.push(' ');
        int(&mut out, i64::MIN);
        out.push(' ');
        hex(&mut out, &[0, 0xab, 0x7f], Some(':'));
        out.push(' ');
        hex(&mut out, &[], None);
        assert_eq!(out, "18446744073709551615 -9223372036854775808 \"00:ab:7f\" \"\"");
    }
}
