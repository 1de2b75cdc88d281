//! Kernel bytes to JSON, driven by a [`Spec`]. Names and values follow the
//! kernel's YNL library: enums as names, flags as lists of names, structs
//! as objects, display hints as text, multi-attrs as arrays. Attributes the
//! spec does not know (a newer kernel) are kept as `"attr-N": "<hex>"` and
//! never fail a decode.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::spec::{AttrDef, AttrKind, AttrSet, DisplayHint, EnumDef, Links, MemberDef, Spec};
use genl_wire::Attrs;

/// Why kernel bytes could not be decoded with the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decoding {path}: {message}")]
pub struct DecodeError {
    /// Where: the attribute path, e.g. `dev.xdp-features`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> DecodeError {
    DecodeError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The JSON key of an attribute the spec does not know.
pub fn unknown_key(kind: u16) -> String {
    format!("attr-{kind}")
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An integer read from the wire, before the spec shapes it.
#[derive(Debug, Clone, Copy)]
enum Int {
    Unsigned(u64),
    Signed(i64),
}

impl Int {
    fn value(self) -> Value {
        match self {
            Self::Unsigned(u) => Value::from(u),
            Self::Signed(i) => Value::from(i),
        }
    }

    /// Its bits for enum and flag lookup (a negative value as two's
    /// complement, as the kernel's YNL library compares it).
    fn bits(self) -> u64 {
        match self {
            Self::Unsigned(u) => u,
            Self::Signed(i) => i as u64,
        }
    }

    /// The value when it is not negative.
    fn unsigned(self) -> Option<u64> {
        match self {
            Self::Unsigned(u) => Some(u),
            Self::Signed(i) => u64::try_from(i).ok(),
        }
    }
}

fn read_int(raw: &[u8], size: usize, signed: bool, big_endian: bool) -> Result<Int, String> {
    let b = raw
        .get(..size)
        .ok_or_else(|| format!("{} bytes where {size} are needed", raw.len()))?;
    let mut buf = [0u8; 8];
    if big_endian {
        buf[8 - size..].copy_from_slice(b);
        buf.reverse();
    } else {
        buf[..size].copy_from_slice(b);
    }
    let u = u64::from_le_bytes(buf);
    Ok(if signed {
        let shift = 64 - 8 * size as u32;
        Int::Signed(((u << shift) as i64) >> shift)
    } else {
        Int::Unsigned(u)
    })
}

fn int_bytes(
    raw: &[u8],
    size: usize,
    signed: bool,
    big_endian: bool,
    path: &str,
) -> Result<Int, DecodeError> {
    read_int(raw, size, signed, big_endian).map_err(|m| err(path, m))
}

impl Spec {
    /// Decode the attributes in `buf` with set `set`.
    pub fn decode_attrs(&self, set: &str, buf: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        let set = self
            .set(set)
            .ok_or_else(|| err(set, "no such attribute set in the spec"))?;
        self.decode_set(set, buf, &[], set.name.as_str())
    }

    fn decode_set(
        &self,
        set: &AttrSet,
        buf: &[u8],
        outer: &[&Map<String, Value>],
        path: &str,
    ) -> Result<Map<String, Value>, DecodeError> {
        let mut out = Map::new();
        for attr in Attrs::new(buf) {
            let attr = attr.map_err(|e| err(path, e.to_string()))?;
            let Some((def, links)) = set.linked(attr.kind()) else {
                out.insert(unknown_key(attr.kind()), Value::String(hex(attr.bytes())));
                continue;
            };
            if matches!(def.kind, AttrKind::Pad | AttrKind::Unused) {
                continue;
            }
            // Most attributes are scalars: decode them without the path
            // and scope that only nests and errors need (one allocation
            // each per attribute otherwise).
            let value = match self.decode_scalar(def, links, attr.bytes()) {
                Some(Ok(v)) => v,
                Some(Err(message)) => return Err(err(&format!("{path}.{}", def.name), message)),
                None => {
                    let here = format!("{path}.{}", def.name);
                    let mut scope: Vec<&Map<String, Value>> = Vec::with_capacity(outer.len() + 1);
                    scope.push(&out);
                    scope.extend_from_slice(outer);
                    self.decode_value(def, links, attr.bytes(), &scope, &here)?
                }
            };
            if def.multi {
                match out
                    .entry(def.name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()))
                {
                    Value::Array(items) => items.push(value),
                    other => *other = Value::Array(vec![other.take(), value]),
                }
            } else {
                out.insert(def.name.clone(), value);
            }
        }
        Ok(out)
    }

    /// A scalar attribute's value, or `None` for kinds that need the
    /// enclosing scope (nests, arrays, sub-messages, structs).
    fn decode_scalar(&self, def: &AttrDef, links: Links, raw: &[u8]) -> Option<Result<Value, String>> {
        let int = |size: usize, signed: bool| {
            read_int(raw, size, signed, def.big_endian).map(|v| {
                self.shape_int(
                    v,
                    links.enumeration.and_then(|i| self.enum_at(i)),
                    def.enum_as_flags,
                    def.display_hint,
                    def.big_endian,
                )
            })
        };
        Some(match def.kind {
            AttrKind::Flag => Ok(Value::Bool(true)),
            AttrKind::String => Ok(Value::String(string(raw))),
            AttrKind::Uint | AttrKind::Sint => match raw.len() {
                4 | 8 => int(raw.len(), def.kind == AttrKind::Sint),
                n => Err(format!("a variable-size integer of {n} bytes (4 or 8 expected)")),
            },
            AttrKind::Binary if def.structure.is_none() && def.sub_type.is_none() => {
                Ok(bytes_shown(raw, def.display_hint))
            }
            k => match k.fixed_int() {
                Some((size, signed)) => int(size, signed),
                None => return None,
            },
        })
    }

    fn decode_value(
        &self,
        def: &AttrDef,
        links: Links,
        raw: &[u8],
        scope: &[&Map<String, Value>],
        path: &str,
    ) -> Result<Value, DecodeError> {
        let enumeration = links.enumeration.and_then(|i| self.enum_at(i));
        Ok(match def.kind {
            AttrKind::Flag => Value::Bool(true),
            AttrKind::String => Value::String(string(raw)),
            AttrKind::Uint | AttrKind::Sint => {
                let signed = def.kind == AttrKind::Sint;
                let size = match raw.len() {
                    4 | 8 => raw.len(),
                    n => {
                        return Err(err(
                            path,
                            format!("a variable-size integer of {n} bytes (4 or 8 expected)"),
                        ));
                    }
                };
                let v = int_bytes(raw, size, signed, def.big_endian, path)?;
                self.shape_int(
                    v,
                    enumeration,
                    def.enum_as_flags,
                    def.display_hint,
                    def.big_endian,
                )
            }
            k if k.fixed_int().is_some() => {
                let (size, signed) = k.fixed_int().unwrap_or((0, false));
                let v = int_bytes(raw, size, signed, def.big_endian, path)?;
                self.shape_int(
                    v,
                    enumeration,
                    def.enum_as_flags,
                    def.display_hint,
                    def.big_endian,
                )
            }
            AttrKind::Binary => {
                if let Some(s) = &def.structure {
                    Value::Object(self.decode_struct(s, raw, path)?)
                } else if let Some(t) = def.sub_type.and_then(AttrKind::fixed_int) {
                    let (size, signed) = t;
                    raw.chunks_exact(size)
                        .map(|c| int_bytes(c, size, signed, def.big_endian, path).map(Int::value))
                        .collect::<Result<Vec<_>, _>>()
                        .map(Value::Array)?
                } else {
                    bytes_shown(raw, def.display_hint)
                }
            }
            AttrKind::Nest => {
                let set = self.nested_set(links, path)?;
                Value::Object(self.decode_set(set, raw, scope, path)?)
            }
            AttrKind::IndexedArray => {
                let mut items = Vec::new();
                for item in Attrs::new(raw) {
                    let item = item.map_err(|e| err(path, e.to_string()))?;
                    let at = format!("{path}[{}]", item.kind());
                    items.push(match def.sub_type {
                        Some(AttrKind::Nest) => {
                            let set = self.nested_set(links, path)?;
                            Value::Object(self.decode_set(set, item.bytes(), scope, &at)?)
                        }
                        Some(t) if t.fixed_int().is_some() => {
                            let (size, signed) = t.fixed_int().unwrap_or((0, false));
                            let v = int_bytes(item.bytes(), size, signed, def.big_endian, &at)?;
                            self.shape_int(v, None, false, def.display_hint, def.big_endian)
                        }
                        _ => bytes_shown(item.bytes(), def.display_hint),
                    });
                }
                Value::Array(items)
            }
            AttrKind::NestTypeValue => {
                let mut out = Map::new();
                let mut level = raw;
                for name in &def.type_value {
                    let first = Attrs::new(level)
                        .next()
                        .ok_or_else(|| err(path, format!("missing the '{name}' level")))?
                        .map_err(|e| err(path, e.to_string()))?;
                    out.insert(name.clone(), Value::from(first.kind()));
                    level = first.bytes();
                }
                let set = self.nested_set(links, path)?;
                out.extend(self.decode_set(set, level, scope, path)?);
                Value::Object(out)
            }
            AttrKind::Bitfield32 => {
                let v = int_bytes(raw, 4, false, false, path)?;
                let s = int_bytes(raw.get(4..).unwrap_or_default(), 4, false, false, path)?;
                let mut out = Map::new();
                out.insert(
                    "value".into(),
                    self.shape_int(v, enumeration, def.enum_as_flags, None, false),
                );
                out.insert(
                    "selector".into(),
                    self.shape_int(s, enumeration, def.enum_as_flags, None, false),
                );
                Value::Object(out)
            }
            AttrKind::SubMessage => self.decode_sub_message(def, raw, scope, path)?,
            _ => Value::String(hex(raw)),
        })
    }

    fn nested_set(&self, links: Links, path: &str) -> Result<&AttrSet, DecodeError> {
        links
            .nested
            .and_then(|i| self.set_at(i))
            .ok_or_else(|| err(path, "the spec names no nested attribute set"))
    }

    fn decode_sub_message(
        &self,
        def: &AttrDef,
        raw: &[u8],
        scope: &[&Map<String, Value>],
        path: &str,
    ) -> Result<Value, DecodeError> {
        let format = self.sub_message_format(def, scope).map_err(|m| err(path, m))?;
        let mut out = Map::new();
        let mut offset = 0;
        if let Some(h) = &format.fixed_header {
            out.extend(self.decode_struct(h, raw, path)?);
            offset = self.struct_size(Some(h));
        }
        if let Some(s) = &format.attribute_set
            && let Some(set) = self.set(s)
        {
            out.extend(self.decode_set(set, raw.get(offset..).unwrap_or_default(), scope, path)?);
        }
        Ok(Value::Object(out))
    }

    /// The format a sub-message attribute has, from its selector's value in
    /// the enclosing sets (innermost first).
    pub(super) fn sub_message_format(
        &self,
        def: &AttrDef,
        scope: &[&Map<String, Value>],
    ) -> Result<&super::spec::SubMessageFormat, String> {
        let selector = def.selector.as_deref().unwrap_or_default();
        let value = scope
            .iter()
            .find_map(|m| m.get(selector))
            .ok_or_else(|| format!("its selector '{selector}' must come before it"))?;
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let formats = self
            .sub_message(def.sub_message.as_deref().unwrap_or_default())
            .unwrap_or_default();
        formats
            .iter()
            .find(|f| f.value == text)
            .ok_or_else(|| format!("'{text}' (from '{selector}') selects no format of this sub-message"))
    }

    /// Decode struct `name` from the front of `raw` into an object.
    pub fn decode_struct(
        &self,
        name: &str,
        raw: &[u8],
        path: &str,
    ) -> Result<Map<String, Value>, DecodeError> {
        let def = self
            .structure(name)
            .ok_or_else(|| err(path, format!("no struct '{name}'")))?;
        if raw.len() < def.size {
            return Err(err(
                path,
                format!(
                    "struct {name} needs {} bytes, the message has {}",
                    def.size,
                    raw.len()
                ),
            ));
        }
        let mut out = Map::new();
        let mut offset = 0;
        for m in &def.members {
            let bytes = &raw[offset..offset + m.len];
            offset += m.len;
            if let Some(v) = self.decode_member(m, bytes, path)? {
                out.insert(m.name.clone(), v);
            }
        }
        Ok(out)
    }

    fn decode_member(&self, m: &MemberDef, bytes: &[u8], path: &str) -> Result<Option<Value>, DecodeError> {
        Ok(Some(match m.kind {
            AttrKind::Pad => return Ok(None),
            AttrKind::Binary => match &m.structure {
                Some(s) => Value::Object(self.decode_struct(s, bytes, path)?),
                None => bytes_shown(bytes, m.display_hint),
            },
            k => {
                let (size, signed) = k.fixed_int().unwrap_or((bytes.len(), false));
                let v = int_bytes(bytes, size, signed, m.big_endian, path)?;
                self.shape_int(
                    v,
                    m.enumeration.as_deref().and_then(|e| self.enumeration(e)),
                    m.enum_as_flags,
                    m.display_hint,
                    m.big_endian,
                )
            }
        }))
    }

    /// An integer as the spec shows it: an enum name, a list of flag names,
    /// or text per its display hint.
    fn shape_int(
        &self,
        v: Int,
        enumeration: Option<&EnumDef>,
        as_flags: bool,
        hint: Option<DisplayHint>,
        big_endian: bool,
    ) -> Value {
        if let Some(e) = enumeration {
            let raw = v.bits();
            if e.flags || as_flags {
                // Set bits only, lowest first (the order the names had when
                // every one of the 64 bits was tried).
                let mut names = Vec::new();
                let mut rest = raw;
                while rest != 0 {
                    let bit = u64::from(rest.trailing_zeros());
                    rest &= rest - 1;
                    names.push(match e.name_of(bit) {
                        Some(n) => Value::String(n.to_owned()),
                        None => Value::from(1u64 << bit),
                    });
                }
                return Value::Array(names);
            }
            return e
                .name_of(raw)
                .map_or_else(|| v.value(), |n| Value::String(n.to_owned()));
        }
        match (hint, v.unsigned()) {
            (Some(DisplayHint::Hex), Some(n)) => Value::String(format!("{n:#x}")),
            (Some(DisplayHint::Ipv4), Some(n)) => {
                // A big-endian u32 already reads as the address's number.
                let n = u32::try_from(n).unwrap_or_default();
                let n = if big_endian { n } else { n.swap_bytes() };
                Value::String(Ipv4Addr::from(n).to_string())
            }
            _ => v.value(),
        }
    }
}

/// Bytes as text: per the display hint, else hex without separators (what
/// the YNL CLI prints for bytes).
fn bytes_shown(raw: &[u8], hint: Option<DisplayHint>) -> Value {
    let s = match hint {
        Some(DisplayHint::Mac) => raw
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        Some(DisplayHint::Hex) => raw
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
        Some(DisplayHint::Ipv4 | DisplayHint::Ipv4OrV6) if raw.len() == 4 => {
            Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string()
        }
        Some(DisplayHint::Ipv6 | DisplayHint::Ipv4OrV6) if raw.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(raw);
            Ipv6Addr::from(b).to_string()
        }
        Some(DisplayHint::Uuid) if raw.len() == 16 => {
            let h = hex(raw);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }
        _ => hex(raw),
    };
    Value::String(s)
}

/// A kernel string: up to its NUL, invalid UTF-8 replaced.
fn string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Spec;

    /// Numbering the decoder's index tables must survive: a gap, a number
    /// far above the rest (a set too sparse for a dense table), and flags
    /// with a bit the spec does not name. Bytes and expected JSON are
    /// written by hand from the netlink attribute layout.
    const SPEC: &str = "
name: t
protocol: genetlink
definitions:
  - {name: fl, type: flags, entries: [a, b, {name: d, value: 3}]}
attribute-sets:
  - name: dense
    attributes:
      - {name: one, type: u32}
      - {name: five, type: u64, value: 5, enum: fl}
      - {name: inner, type: nest, nested-attributes: sparse}  # 6
  - name: sparse
    attributes:
      - {name: low, type: u16}
      - {name: high, type: u8, value: 16000}
operations:
  list:
    - {name: get, attribute-set: dense, do: {reply: {attributes: [one]}}}
";

    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        let mut out = [len.to_le_bytes(), kind.to_le_bytes()].concat();
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn sparse_and_gapped_numbering_and_unnamed_flag_bits() {
        let spec = Spec::load(SPEC).unwrap_or_else(|e| panic!("{e}"));
        let inner = [attr(1, &7u16.to_le_bytes()), attr(16000, &[9]), attr(2, &[0xab])].concat();
        let msg = [
            attr(1, &42u32.to_le_bytes()),
            // Bits 0, 2 (unnamed: its mask) and 3.
            attr(5, &0b1101u64.to_le_bytes()),
            attr(6, &inner),
            // Numbers the set does not have: in the gap, and past its end.
            attr(4, &[1, 2]),
            attr(200, &[3]),
        ]
        .concat();
        let got = spec.decode_attrs("dense", &msg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::Value::Object(got),
            json!({
                "one": 42,
                "five": ["a", 4, "d"],
                "inner": {"low": 7, "high": 9, "attr-2": "ab"},
                "attr-4": "0102",
                "attr-200": "03",
            })
        );
    }
}
