//! JSON to kernel bytes, driven by a [`Spec`]. The one way client input
//! becomes attributes: every key must be an attribute the operation's
//! request documents (nested objects: an attribute of the nested set), every
//! value must fit its type and the spec's `checks`, and each refusal names
//! the JSON path of the bad field. Nothing in the input can become raw,
//! undescribed attributes.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::spec::{AttrDef, AttrKind, AttrSet, Checks, DisplayHint, MemberDef, Spec};

/// Why client input could not be encoded. `path` is a JSON path such as
/// `$.header.dev-name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct EncodeError {
    /// Where in the input.
    pub path: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

fn err(path: &Path<'_>, message: impl Into<String>) -> EncodeError {
    EncodeError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Where a value sits in the client's input, spelled out as a JSON path
/// (`$.header.dev-name`, `$.ops[2]`) only when an error names it: a call
/// whose input is good writes no path at all.
#[derive(Clone, Copy)]
enum Path<'a> {
    /// The top level, as the caller names it (`$`).
    Root(&'a str),
    /// A key of an object.
    Key(&'a Path<'a>, &'a str),
    /// An item of an array.
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

const TOP: Path<'static> = Path::Root("$");

/// Netlink's attribute length field is 16 bits.
const MAX_ATTR: usize = u16::MAX as usize;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize, path: &Path<'_>) -> Result<(), EncodeError> {
        let len = self.buf.len() - at;
        let len16 = u16::try_from(len)
            .ok()
            .filter(|_| len <= MAX_ATTR)
            .ok_or_else(|| err(path, format!("{len} bytes do not fit one netlink attribute")))?;
        self.buf[at..at + 2].copy_from_slice(&len16.to_ne_bytes());
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        Ok(())
    }

    fn put(&mut self, kind: u16, payload: &[u8], path: &Path<'_>) -> Result<(), EncodeError> {
        let at = self.begin(kind);
        self.buf.extend_from_slice(payload);
        self.end(at, path)
    }
}

fn accepted(names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.collect();
    if names.is_empty() {
        "it takes no input".to_owned()
    } else {
        format!("accepted: {}", names.join(", "))
    }
}

impl Spec {
    /// Encode `input` (a JSON object, or null for none) as the attributes
    /// of set `set`. At the top level only the attributes in `allowed` are
    /// accepted (an operation's documented request); nested objects accept
    /// any attribute of their set. Members of `fixed_header`, if given, are
    /// taken from the same object and written first.
    pub fn encode_request(
        &self,
        set: &str,
        allowed: &[String],
        fixed_header: Option<&str>,
        input: &Value,
    ) -> Result<Vec<u8>, EncodeError> {
        let empty = Map::new();
        let obj = match input {
            Value::Null => &empty,
            Value::Object(o) => o,
            _ => return Err(err(&TOP, "the input must be a JSON object")),
        };
        let set = self
            .set(set)
            .ok_or_else(|| err(&TOP, format!("the spec has no attribute set '{set}'")))?;
        let mut w = Writer { buf: Vec::new() };
        let header_members: Vec<&MemberDef> = fixed_header
            .and_then(|h| self.structure(h))
            .map(|s| s.members.iter().filter(|m| m.kind != AttrKind::Pad).collect())
            .unwrap_or_default();
        if let Some(h) = fixed_header {
            let b = self.encode_struct_at(h, obj, &TOP, true)?;
            w.buf.extend_from_slice(&b);
        }
        for (key, value) in obj {
            if header_members.iter().any(|m| &m.name == key) {
                continue;
            }
            let path = Path::Key(&TOP, key);
            let def = set
                .by_name(key)
                .filter(|_| allowed.iter().any(|a| a == key))
                .ok_or_else(|| {
                    let names = header_members
                        .iter()
                        .map(|m| m.name.clone())
                        .chain(allowed.iter().cloned());
                    err(&path, format!("unknown key; {}", accepted(names)))
                })?;
            self.encode_attr(&mut w, def, value, &[obj], &path)?;
        }
        Ok(w.buf)
    }

    fn encode_set(
        &self,
        w: &mut Writer,
        set: &AttrSet,
        obj: &Map<String, Value>,
        scope: &[&Map<String, Value>],
        path: &Path<'_>,
    ) -> Result<(), EncodeError> {
        let mut inner: Vec<&Map<String, Value>> = Vec::with_capacity(scope.len() + 1);
        inner.push(obj);
        inner.extend_from_slice(scope);
        for (key, value) in obj {
            let here = Path::Key(path, key);
            let def = set
                .by_name(key)
                .filter(|d| !matches!(d.kind, AttrKind::Pad | AttrKind::Unused))
                .ok_or_else(|| {
                    let names = set
                        .attrs
                        .iter()
                        .filter(|d| !matches!(d.kind, AttrKind::Pad | AttrKind::Unused))
                        .map(|d| d.name.clone());
                    err(&here, format!("unknown key; {}", accepted(names)))
                })?;
            self.encode_attr(w, def, value, &inner, &here)?;
        }
        Ok(())
    }

    fn encode_attr(
        &self,
        w: &mut Writer,
        def: &AttrDef,
        value: &Value,
        scope: &[&Map<String, Value>],
        path: &Path<'_>,
    ) -> Result<(), EncodeError> {
        if def.multi
            && let Value::Array(items) = value
        {
            for (i, item) in items.iter().enumerate() {
                self.encode_one(w, def, item, scope, &Path::Index(path, i))?;
            }
            return Ok(());
        }
        self.encode_one(w, def, value, scope, path)
    }

    fn encode_one(
        &self,
        w: &mut Writer,
        def: &AttrDef,
        value: &Value,
        scope: &[&Map<String, Value>],
        path: &Path<'_>,
    ) -> Result<(), EncodeError> {
        let order = if def.big_endian { NLA_F_NET_BYTEORDER } else { 0 };
        match def.kind {
            AttrKind::Flag => match value {
                Value::Bool(true) => w.put(def.value, &[], path),
                Value::Bool(false) | Value::Null => Ok(()),
                _ => Err(err(path, "a flag takes true or false")),
            },
            AttrKind::String => {
                let s = value.as_str().ok_or_else(|| err(path, "expected a string"))?;
                if s.contains('\0') {
                    return Err(err(
                        path,
                        "a string may not contain NUL (the kernel would cut it there)",
                    ));
                }
                check_len(&def.checks, s.len(), path)?;
                let at = w.begin(def.value);
                w.buf.extend_from_slice(s.as_bytes());
                w.buf.push(0);
                w.end(at, path)
            }
            AttrKind::Uint | AttrKind::Sint => {
                let n = self.int_input(def.enumeration.as_deref(), def.enum_as_flags, value, path)?;
                let signed = def.kind == AttrKind::Sint;
                let (lo, hi) = if signed {
                    (i64::MIN as i128, i64::MAX as i128)
                } else {
                    (0, u64::MAX as i128)
                };
                check_range(&def.checks, n, lo, hi, path)?;
                let wide = if signed {
                    i32::try_from(n).is_err()
                } else {
                    u32::try_from(n).is_err()
                };
                let size = if wide { 8 } else { 4 };
                w.put(def.value | order, &int_to_bytes(n, size, def.big_endian), path)
            }
            k if k.fixed_int().is_some() => {
                let (size, signed) = k.fixed_int().unwrap_or((0, false));
                let n = match (def.display_hint, value) {
                    (Some(DisplayHint::Ipv4), Value::String(s)) if size == 4 => {
                        let a: Ipv4Addr = s.parse().map_err(|_| err(path, "expected an IPv4 address"))?;
                        let n = u32::from(a);
                        i128::from(if def.big_endian { n } else { n.swap_bytes() })
                    }
                    _ => self.int_input(def.enumeration.as_deref(), def.enum_as_flags, value, path)?,
                };
                let (lo, hi) = int_bounds(size, signed);
                check_range(&def.checks, n, lo, hi, path)?;
                w.put(def.value | order, &int_to_bytes(n, size, def.big_endian), path)
            }
            AttrKind::Binary => {
                let b = if let Some(s) = &def.structure {
                    let obj = value
                        .as_object()
                        .ok_or_else(|| err(path, format!("expected an object (struct {s})")))?;
                    self.encode_struct_at(s, obj, path, false)?
                } else if let Some(t) = def.sub_type.filter(|t| t.fixed_int().is_some()) {
                    let items = value
                        .as_array()
                        .ok_or_else(|| err(path, "expected an array of integers"))?;
                    let (size, signed) = t.fixed_int().unwrap_or((0, false));
                    let (lo, hi) = int_bounds(size, signed);
                    let mut b = Vec::with_capacity(items.len() * size);
                    for (i, item) in items.iter().enumerate() {
                        let p = Path::Index(path, i);
                        let n = self.int_input(None, false, item, &p)?;
                        check_range(&Checks::default(), n, lo, hi, &p)?;
                        b.extend_from_slice(&int_to_bytes(n, size, def.big_endian));
                    }
                    b
                } else {
                    bytes_input(value, def.display_hint, path)?
                };
                check_len(&def.checks, b.len(), path)?;
                w.put(def.value, &b, path)
            }
            AttrKind::Nest => {
                let obj = value.as_object().ok_or_else(|| err(path, "expected an object"))?;
                let set = self.nested(def, path)?;
                let at = w.begin(def.value | NLA_F_NESTED);
                self.encode_set(w, set, obj, scope, path)?;
                w.end(at, path)
            }
            AttrKind::IndexedArray => {
                let items = value.as_array().ok_or_else(|| err(path, "expected an array"))?;
                let at = w.begin(def.value | NLA_F_NESTED);
                for (i, item) in items.iter().enumerate() {
                    let p = Path::Index(path, i);
                    let index = u16::try_from(i).map_err(|_| err(&p, "too many items"))?;
                    match def.sub_type {
                        Some(AttrKind::Nest) => {
                            let obj = item.as_object().ok_or_else(|| err(&p, "expected an object"))?;
                            let set = self.nested(def, path)?;
                            let inner = w.begin(index | NLA_F_NESTED);
                            self.encode_set(w, set, obj, scope, &p)?;
                            w.end(inner, &p)?;
                        }
                        Some(t) if t.fixed_int().is_some() => {
                            let (size, signed) = t.fixed_int().unwrap_or((0, false));
                            let n = self.int_input(None, false, item, &p)?;
                            let (lo, hi) = int_bounds(size, signed);
                            check_range(&Checks::default(), n, lo, hi, &p)?;
                            w.put(index, &int_to_bytes(n, size, def.big_endian), &p)?;
                        }
                        _ => {
                            let b = bytes_input(item, def.display_hint, &p)?;
                            w.put(index, &b, &p)?;
                        }
                    }
                }
                w.end(at, path)
            }
            AttrKind::Bitfield32 => {
                let obj = value
                    .as_object()
                    .ok_or_else(|| err(path, "expected {\"value\": ..., \"selector\": ...}"))?;
                if let Some(k) = obj.keys().find(|k| *k != "value" && *k != "selector") {
                    return Err(err(&Path::Key(path, k), "unknown key; accepted: value, selector"));
                }
                let e = def.enumeration.as_deref();
                let get = |k: &str| -> Result<u32, EncodeError> {
                    let p = Path::Key(path, k);
                    let v = obj.get(k).ok_or_else(|| err(&p, "missing"))?;
                    let n = self.int_input(e, def.enum_as_flags, v, &p)?;
                    u32::try_from(n).map_err(|_| err(&p, "does not fit 32 bits"))
                };
                let mut b = get("value")?.to_ne_bytes().to_vec();
                b.extend_from_slice(&get("selector")?.to_ne_bytes());
                w.put(def.value, &b, path)
            }
            AttrKind::NestTypeValue => {
                let obj = value.as_object().ok_or_else(|| err(path, "expected an object"))?;
                let mut levels = Vec::new();
                for name in &def.type_value {
                    let p = Path::Key(path, name);
                    let n = obj.get(name).ok_or_else(|| err(&p, "missing"))?;
                    let n = self.int_input(None, false, n, &p)?;
                    levels.push(u16::try_from(n).map_err(|_| err(&p, "not an attribute number"))?);
                }
                let rest: Map<String, Value> = obj
                    .iter()
                    .filter(|(k, _)| !def.type_value.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let set = self.nested(def, path)?;
                let outer = w.begin(def.value | NLA_F_NESTED);
                let mut opened = Vec::new();
                for l in &levels {
                    opened.push(w.begin(*l | NLA_F_NESTED));
                }
                self.encode_set(w, set, &rest, scope, path)?;
                for at in opened.into_iter().rev() {
                    w.end(at, path)?;
                }
                w.end(outer, path)
            }
            AttrKind::SubMessage => {
                let obj = value.as_object().ok_or_else(|| err(path, "expected an object"))?;
                let selector = def.selector.as_deref().unwrap_or_default();
                let text = scope
                    .iter()
                    .find_map(|m| m.get(selector))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .ok_or_else(|| err(path, format!("its selector '{selector}' must come before it")))?;
                let format = self.sub_message_format(def, &text).map_err(|m| err(path, m))?;
                let mut kind = def.value;
                let at = w.begin(kind);
                let mut header_names = Vec::new();
                if let Some(h) = &format.fixed_header {
                    let b = self.encode_struct_at(h, obj, path, true)?;
                    w.buf.extend_from_slice(&b);
                    if let Some(s) = self.structure(h) {
                        header_names.extend(s.members.iter().map(|m| m.name.clone()));
                    }
                }
                let rest: Map<String, Value> = obj
                    .iter()
                    .filter(|(k, _)| !header_names.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                match format.attribute_set.as_deref().and_then(|s| self.set(s)) {
                    Some(set) => {
                        kind |= NLA_F_NESTED;
                        w.buf[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
                        self.encode_set(w, set, &rest, scope, path)?;
                    }
                    None => {
                        if let Some(k) = rest.keys().next() {
                            return Err(err(
                                &Path::Key(path, k),
                                "unknown key; this format carries no attributes",
                            ));
                        }
                    }
                }
                w.end(at, path)
            }
            AttrKind::Pad | AttrKind::Unused => Err(err(path, "this attribute cannot be sent")),
            _ => Err(err(path, "this attribute type cannot be encoded")),
        }
    }

    fn nested(&self, def: &AttrDef, path: &Path<'_>) -> Result<&AttrSet, EncodeError> {
        def.nested
            .as_deref()
            .and_then(|n| self.set(n))
            .ok_or_else(|| err(path, "the spec names no nested attribute set"))
    }

    /// Encode struct `name` from the members in `obj`. Absent members are
    /// zero. With `shared`, `obj` also holds other keys (a fixed header's
    /// members sit beside the attributes); otherwise unknown keys are refused.
    /// `path` names `obj` in errors (`$` for the top level).
    pub fn encode_struct(
        &self,
        name: &str,
        obj: &Map<String, Value>,
        path: &str,
        shared: bool,
    ) -> Result<Vec<u8>, EncodeError> {
        self.encode_struct_at(name, obj, &Path::Root(path), shared)
    }

    fn encode_struct_at(
        &self,
        name: &str,
        obj: &Map<String, Value>,
        path: &Path<'_>,
        shared: bool,
    ) -> Result<Vec<u8>, EncodeError> {
        let def = self
            .structure(name)
            .ok_or_else(|| err(path, format!("no struct '{name}'")))?;
        if !shared
            && let Some(k) = obj.keys().find(|k| {
                !def.members
                    .iter()
                    .any(|m| &&m.name == k && m.kind != AttrKind::Pad)
            })
        {
            let names = def
                .members
                .iter()
                .filter(|m| m.kind != AttrKind::Pad)
                .map(|m| m.name.clone());
            return Err(err(
                &Path::Key(path, k),
                format!("unknown key; {}", accepted(names)),
            ));
        }
        let mut out = Vec::with_capacity(def.size);
        for m in &def.members {
            let p = Path::Key(path, &m.name);
            let v = obj.get(&m.name);
            match (m.kind, v) {
                (AttrKind::Pad, _) | (_, None) => out.resize(out.len() + m.len, 0),
                (AttrKind::Binary, Some(v)) => {
                    let b = match &m.structure {
                        Some(s) => {
                            let o = v.as_object().ok_or_else(|| err(&p, "expected an object"))?;
                            self.encode_struct_at(s, o, &p, false)?
                        }
                        None => bytes_input(v, m.display_hint, &p)?,
                    };
                    if b.len() != m.len {
                        return Err(err(
                            &p,
                            format!("{} bytes where the struct has {}", b.len(), m.len),
                        ));
                    }
                    out.extend_from_slice(&b);
                }
                (k, Some(v)) => {
                    let (size, signed) = k.fixed_int().unwrap_or((m.len, false));
                    let n = self.int_input(m.enumeration.as_deref(), m.enum_as_flags, v, &p)?;
                    let (lo, hi) = int_bounds(size, signed);
                    check_range(&Checks::default(), n, lo, hi, &p)?;
                    out.extend_from_slice(&int_to_bytes(n, size, m.big_endian));
                }
            }
        }
        Ok(out)
    }

    /// An integer from JSON: a number, an enum entry's name, or for flags a
    /// list of names (or one name).
    fn int_input(
        &self,
        enumeration: Option<&str>,
        as_flags: bool,
        v: &Value,
        path: &Path<'_>,
    ) -> Result<i128, EncodeError> {
        if let Some(n) = v.as_i64() {
            return Ok(n.into());
        }
        if let Some(n) = v.as_u64() {
            return Ok(n.into());
        }
        let e = enumeration.and_then(|e| self.enumeration(e));
        let Some(e) = e else {
            return Err(err(path, "expected an integer"));
        };
        let names = || {
            e.entries
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entry = |name: &str| {
            e.value_of(name)
                .ok_or_else(|| err(path, format!("'{name}' is not one of {}: {}", e.name, names())))
        };
        let flags = e.flags || as_flags;
        match v {
            Value::String(s) if flags => Ok(1i128 << entry(s)?),
            Value::String(s) => Ok(entry(s)?.into()),
            Value::Array(items) if flags => {
                let mut mask = 0i128;
                for (i, item) in items.iter().enumerate() {
                    let name = item.as_str().ok_or_else(|| {
                        err(&Path::Index(path, i), format!("expected a name of {}", e.name))
                    })?;
                    mask |= 1i128 << entry(name)?;
                }
                Ok(mask)
            }
            _ => Err(err(
                path,
                format!("expected an integer or a name of {}: {}", e.name, names()),
            )),
        }
    }
}

fn int_bounds(size: usize, signed: bool) -> (i128, i128) {
    let bits = 8 * size as u32;
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

fn check_range(c: &Checks, n: i128, lo: i128, hi: i128, path: &Path<'_>) -> Result<(), EncodeError> {
    let lo = c.min.map_or(lo, |m| m.max(lo));
    let hi = c.max.map_or(hi, |m| m.min(hi));
    if n < lo || n > hi {
        return Err(err(path, format!("{n} is out of range {lo}..={hi}")));
    }
    Ok(())
}

fn check_len(c: &Checks, len: usize, path: &Path<'_>) -> Result<(), EncodeError> {
    if let Some(x) = c.exact_len
        && len != x
    {
        return Err(err(path, format!("{len} bytes; exactly {x} are needed")));
    }
    if let Some(m) = c.min_len
        && len < m
    {
        return Err(err(path, format!("{len} bytes; at least {m} are needed")));
    }
    if let Some(m) = c.max_len
        && len > m
    {
        return Err(err(path, format!("{len} bytes; at most {m} are allowed")));
    }
    Ok(())
}

/// An integer's bytes as an attribute or struct member carries them, kept
/// on the stack: encoding a request's integers allocates nothing.
struct IntBytes {
    bytes: [u8; 8],
    len: usize,
}

impl std::ops::Deref for IntBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `n`'s low `size` bytes (at most 8), in the attribute's byte order.
fn int_to_bytes(n: i128, size: usize, big_endian: bool) -> IntBytes {
    let len = size.min(8);
    let mut bytes = (n as u64).to_le_bytes();
    if big_endian {
        bytes[..len].reverse();
    }
    IntBytes { bytes, len }
}

/// Bytes from JSON: text per the display hint, or hex (separators `:`,
/// `-` and spaces allowed).
fn bytes_input(v: &Value, hint: Option<DisplayHint>, path: &Path<'_>) -> Result<Vec<u8>, EncodeError> {
    let s = v
        .as_str()
        .ok_or_else(|| err(path, "expected a string (hex bytes)"))?;
    match hint {
        Some(DisplayHint::Ipv4) => s
            .parse::<Ipv4Addr>()
            .map(|a| a.octets().to_vec())
            .map_err(|_| err(path, "expected an IPv4 address")),
        Some(DisplayHint::Ipv6) => s
            .parse::<Ipv6Addr>()
            .map(|a| a.octets().to_vec())
            .map_err(|_| err(path, "expected an IPv6 address")),
        Some(DisplayHint::Ipv4OrV6) => s
            .parse::<std::net::IpAddr>()
            .map(|a| match a {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            })
            .map_err(|_| err(path, "expected an IP address")),
        _ => {
            let digits: String = s.chars().filter(|c| !matches!(c, ':' | '-' | ' ')).collect();
            if !digits.len().is_multiple_of(2) || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(path, "expected hex bytes, e.g. \"0a1b\" or \"0a:1b\""));
            }
            (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| err(path, "bad hex")))
                .collect()
        }
    }
}
