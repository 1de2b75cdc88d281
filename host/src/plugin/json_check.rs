//! The check every text a plugin hands out passes (a call's document, each
//! streamed item, an event's payload): JSON that a client's parser reads.
//!
//! Grammar alone is not enough: serde's `IgnoredAny` lets through nesting
//! of any depth, `\ud800` (a lone surrogate, no character) and `1e400`
//! (no finite number), which serde_json and parsers like it then refuse,
//! and with them the whole answer they sit in. This checker accepts what
//! serde_json reads as a `Value` and nothing else: nesting below 128
//! containers (serde_json's limit), escapes that are characters, finite
//! numbers. It is hand-written because walking the value through serde's
//! visitors to get the same strictness cost 2.3x `IgnoredAny`'s time on a
//! dump's items, which lie on the dump's path; this cost about 1.15x (78
//! against 69 µs for 137 KB of dump-like items, release build), and a
//! quarter less in the dump's profile once strings were scanned eight bytes
//! at a time (`string_stop`). The tests hold it to serde_json as the
//! oracle.

/// Why a text is not JSON a client reads, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub(crate) struct JsonError {
    what: &'static str,
    at: usize,
}

/// Containers may nest this deep and no deeper (as in serde_json, whose
/// limit of 128 counts down to zero before the 128th).
const MAX_DEPTH: usize = 127;

/// Whether `text` is exactly one JSON value (with whitespace around it).
pub(crate) fn check(text: &str) -> Result<(), JsonError> {
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    s.value(0)?;
    s.ws();
    match s.b.get(s.i) {
        None => Ok(()),
        Some(_) => Err(s.err("trailing characters")),
    }
}

/// The JSON values written one after another in `text`, each as its own
/// text, as serde_json's `StreamDeserializer` reads them: separated by
/// whitespace, or by nothing after an object, array or string. The first
/// error ends the sequence.
pub(crate) fn values(text: &str) -> impl Iterator<Item = Result<&str, JsonError>> {
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
    };
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        s.ws();
        let start = s.i;
        s.b.get(start)?;
        let item = s.value(0).and_then(|delimited| {
            let end = s.i;
            // After a number or a literal, what follows must end it.
            if !delimited
                && !matches!(
                    s.b.get(end),
                    None | Some(
                        b' ' | b'\n' | b'\t' | b'\r' | b'"' | b'[' | b']' | b'{' | b'}' | b',' | b':'
                    )
                )
            {
                return Err(s.err("trailing characters"));
            }
            Ok(text.get(start..end).unwrap_or_default())
        });
        failed = item.is_err();
        Some(item)
    })
}

/// Where the plain run of a string's characters in `b` stops: the first
/// quote, backslash or control character. Eight bytes at a time, as a
/// dump's items are mostly strings and this scan was half the check's time
/// byte by byte.
fn string_stop(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // `(v - ONES * k) & !v` sets the high bit of each byte of `v`
        // below k (k <= 0x80), and of bytes above one of those, which the
        // subtraction's borrow reaches; borrows only run upwards, so the
        // lowest flagged byte is a true match of one of the three tests.
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|n| at + n)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { what, at: self.i }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8, what: &'static str) -> Result<(), JsonError> {
        if self.b.get(self.i) == Some(&byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// One value at `depth` containers deep; true if it delimits itself
    /// (an object, an array or a string).
    fn value(&mut self, depth: usize) -> Result<bool, JsonError> {
        match self.b.get(self.i) {
            Some(b'{') => self.object(depth).map(|()| true),
            Some(b'[') => self.array(depth).map(|()| true),
            Some(b'"') => self.string().map(|()| true),
            Some(b't') => self.literal(b"true").map(|()| false),
            Some(b'f') => self.literal(b"false").map(|()| false),
            Some(b'n') => self.literal(b"null").map(|()| false),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| false),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end, expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), JsonError> {
        self.container(depth, b'}', "expected ',' or '}'", |s| {
            if s.b.get(s.i) != Some(&b'"') {
                return Err(s.err("expected a key"));
            }
            s.string()?;
            s.ws();
            s.eat(b':', "expected ':'")?;
            s.ws();
            s.value(depth + 1).map(drop)
        })
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        self.container(depth, b']', "expected ',' or ']'", |s| {
            s.value(depth + 1).map(drop)
        })
    }

    /// An object or array, its opening bracket at `i`: `member`s separated
    /// by commas up to `close`.
    fn container(
        &mut self,
        depth: usize,
        close: u8,
        expected: &'static str,
        mut member: impl FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&close) {
            self.i += 1;
            return Ok(());
        }
        loop {
            member(self)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(&c) if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err(expected)),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected a value"))
        }
    }

    /// A string, its opening quote at `i`. The text is a `str`, so the
    /// bytes are UTF-8 already; escapes must be characters.
    fn string(&mut self) -> Result<(), JsonError> {
        self.i += 1;
        loop {
            let rest = self.b.get(self.i..).unwrap_or_default();
            let Some(n) = string_stop(rest) else {
                self.i = self.b.len();
                return Err(self.err("unterminated string"));
            };
            self.i += n;
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    self.escape()?;
                }
                _ => return Err(self.err("control character in a string")),
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self) -> Result<(), JsonError> {
        match self.b.get(self.i) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                self.i += 1;
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A leading surrogate needs its trailing one.
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return Err(self.err("lone leading surrogate"));
                        }
                        self.i += 2;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(self.err("lone leading surrogate")),
                        }
                    }
                    0xDC00..=0xDFFF => Err(self.err("lone trailing surrogate")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.err("invalid escape")),
        }
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let mut v = 0u16;
        for &d in digits {
            let n = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + n as u16;
        }
        self.i += 4;
        Ok(v)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    /// A number: the grammar, and a value within f64 (serde_json refuses
    /// one that rounds to infinity).
    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let integer = match self.b.get(self.i) {
            Some(b'0') => {
                self.i += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        };
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
            exponent = true;
        }
        // Below 300 integer digits and with no exponent, always finite.
        if exponent || integer >= 300 {
            let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or_default();
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => {}
                _ => {
                    return Err(JsonError {
                        what: "number out of range",
                        at: start,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `string_stop` against the byte-by-byte scan it replaces, on every
    /// position of a match in words of every alignment.
    #[test]
    fn string_stop_finds_the_first_quote_backslash_or_control_byte() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let fillers: [u8; 6] = [b'a', 0x7f, 0x80, 0xc3, 0xff, 0x21];
        let stops: [u8; 6] = [b'"', b'\\', 0x00, 0x1f, b'\n', 0x01];
        for len in 0..40 {
            for &fill in &fillers {
                let plain = vec![fill; len];
                assert_eq!(string_stop(&plain), naive(&plain), "{plain:?}");
                for at in 0..len {
                    for &stop in &stops {
                        let mut b = plain.clone();
                        b[at] = stop;
                        // A second stop later must not win.
                        if at + 3 < len {
                            b[at + 3] = b'"';
                        }
                        assert_eq!(string_stop(&b), naive(&b), "{b:?}");
                    }
                }
            }
        }
    }

    fn serde_reads(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text).is_ok()
    }

    /// What serde_json's stream reads from `text`: each value re-serialised,
    /// then whether it ended in an error.
    fn serde_values(text: &str) -> (Vec<serde_json::Value>, bool) {
        let mut out = Vec::new();
        for v in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
            match v {
                Ok(v) => out.push(v),
                Err(_) => return (out, true),
            }
        }
        (out, false)
    }

    fn ours(text: &str) -> (Vec<serde_json::Value>, bool) {
        let mut out = Vec::new();
        for v in values(text) {
            match v {
                Ok(item) => out.push(serde_json::from_str(item).expect("an accepted item parses")),
                Err(_) => return (out, true),
            }
        }
        (out, false)
    }

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
            format!("1{}", "0".repeat(310)),
            format!("1{}", "0".repeat(290)),
            "1e400".into(),
            "-1e999".into(),
            "1e-400".into(),
            r#""\ud83d\ude00""#.into(),
            r#""\ud800""#.into(),
            r#""\udc00x""#.into(),
            r#""\ud800\u0041""#.into(),
            r#""\u00e9\/\b""#.into(),
            "\"a\u{1}\"".into(),
            "\"é\"".into(),
            r#"{"a":[1,{"b":"\n"}],"":{}}"#.into(),
            r#"{"a":1,}"#.into(),
            "[1,]".into(),
            "[1 2]".into(),
            "01".into(),
            "1.".into(),
            "-".into(),
            "".into(),
            " 1 ".into(),
            "1 2".into(),
            "tru".into(),
            "nul".into(),
            deep(126),
            deep(127),
            deep(128),
            deep(200),
            format!("{}1{}", "{\"k\":".repeat(127), "}".repeat(127)),
            format!("{}1{}", "{\"k\":".repeat(128), "}".repeat(128)),
        ];
        for text in &cases {
            assert_eq!(check(text).is_ok(), serde_reads(text), "{text:.60}");
            assert_eq!(ours(text), serde_values(text), "{text:.60}");
        }
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&deep(200)).is_ok(),
            "IgnoredAny, the check before, lets this through"
        );
    }

    /// 200,000 texts made of JSON's pieces at random (a fixed seed): the
    /// checker and the splitter agree with serde_json on every one.
    #[test]
    fn agrees_with_serde_json_on_random_texts() {
        const PIECES: &[&str] = &[
            "[", "]", "{", "}", ",", ":", "\"", "\\", "\"k\"", "\"\\u", "d800", "dc00", "0041", "\\u", "0",
            "1", "9", "-", ".", "e", "E", "+", "300", "true", "false", "null", " ", "\n", "a", "é", "\u{1}",
            "\\n", "\\x", "1e400", "\"s\"", "[]", "{}", "\t",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut accepted, mut split) = (0, 0);
        for _ in 0..200_000 {
            let n = 1 + (next() % 14) as usize;
            let text: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let verdict = serde_reads(&text);
            assert_eq!(check(&text).is_ok(), verdict, "{text:?}");
            let theirs = serde_values(&text);
            assert_eq!(ours(&text), theirs, "{text:?}");
            accepted += usize::from(verdict);
            split += usize::from(theirs.0.len() > 1);
        }
        // Both answers were exercised, not only the refusals.
        eprintln!("{accepted} texts were one value, {split} several");
        assert!(
            accepted > 2_000 && split > 2_000,
            "{accepted} one value, {split} several"
        );
    }
}
