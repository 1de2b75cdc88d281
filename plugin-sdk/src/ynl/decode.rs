//! Kernel bytes to JSON, driven by a [`Spec`]. Names and values follow the
//! kernel's YNL library: enums as names, flags as lists of names, structs
//! as objects, display hints as text, multi-attrs as arrays, keys in wire
//! order. Attributes the spec does not know (a newer kernel) are kept as
//! `"attr-N": "<hex>"` and never fail a decode.
//!
//! The decoder writes JSON text, not `serde_json::Value`s: text is what a
//! client gets, and building a map of owned keys per message only to
//! serialise it again was most of a decode's cost. Callers that want
//! values ([`Spec::decode_attrs`]) parse the text.

use std::fmt;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::json_text::{self, Items, Members};
use super::spec::{
    AttrDef, AttrKind, AttrSet, DisplayHint, EnumDef, Linked, Links, MemberDef, Spec, StructDef,
    SubMessageFormat,
};
use genl_wire::{Attr, Attrs};

/// Why kernel bytes could not be decoded with the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decoding {path}: {message}")]
pub struct DecodeError {
    /// Where: the attribute path, e.g. `dev.xdp-features`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The JSON key of an attribute the spec does not know.
pub fn unknown_key(kind: u16) -> String {
    format!("attr-{kind}")
}

/// Where the decoder is, rendered only when an error needs it (a string
/// per nest would cost an allocation on every message).
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a str),
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, u16),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root(name) => f.write_str(name),
            Self::Field(parent, name) => write!(f, "{parent}.{name}"),
            Self::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn err(path: &Path<'_>, message: impl Into<String>) -> DecodeError {
    DecodeError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// The attribute sets enclosing the attribute being decoded, innermost
/// first, each with the bytes of its attributes that came before: where a
/// sub-message looks for its selector.
#[derive(Clone, Copy)]
struct Scope<'a> {
    set: &'a AttrSet,
    before: &'a [u8],
    outer: Option<&'a Scope<'a>>,
}

impl<'a> Scope<'a> {
    fn iter(&'a self) -> impl Iterator<Item = &'a Scope<'a>> {
        std::iter::successors(Some(self), |s| s.outer)
    }
}

/// An integer read from the wire, before the spec shapes it.
#[derive(Debug, Clone, Copy)]
enum Int {
    Unsigned(u64),
    Signed(i64),
}

impl Int {
    fn write(self, out: &mut String) {
        match self {
            Self::Unsigned(u) => json_text::uint(out, u),
            Self::Signed(i) => json_text::int(out, i),
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

/// The integer of `size` bytes at the front of `raw`. Inline: it is
/// called for nearly every attribute of a dump, and the common cases (host
/// order u32 and u64) are a load each.
#[inline(always)]
fn read_int(raw: &[u8], size: usize, signed: bool, big_endian: bool) -> Result<Int, String> {
    if !signed && !big_endian {
        match (size, raw) {
            (4, [a, b, c, d, ..]) => {
                return Ok(Int::Unsigned(u64::from(u32::from_le_bytes([*a, *b, *c, *d]))));
            }
            (8, [a, b, c, d, e, f, g, h, ..]) => {
                return Ok(Int::Unsigned(u64::from_le_bytes([
                    *a, *b, *c, *d, *e, *f, *g, *h,
                ])));
            }
            _ => {}
        }
    }
    read_int_general(raw, size, signed, big_endian)
}

/// [`read_int`] for every other size, sign and byte order.
#[cold]
#[inline(never)]
fn read_int_general(raw: &[u8], size: usize, signed: bool, big_endian: bool) -> Result<Int, String> {
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

#[inline]
fn int_at(
    raw: &[u8],
    size: usize,
    signed: bool,
    big_endian: bool,
    path: &Path<'_>,
) -> Result<Int, DecodeError> {
    read_int(raw, size, signed, big_endian).map_err(|m| err(path, m))
}

/// Where `attr` starts in `buf` (its header included), which it was read
/// from.
fn offset_of(buf: &[u8], attr: &Attr<'_>) -> usize {
    let at = (attr.bytes().as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    at.saturating_sub(4).min(buf.len())
}

/// How the messages of one operation are decoded: its fixed header and
/// attribute set, resolved (see [`Spec::message_shape`]).
#[derive(Clone, Copy)]
pub struct MessageShape<'a> {
    spec: &'a Spec,
    header: Option<&'a StructDef>,
    set: Option<&'a AttrSet>,
}

impl MessageShape<'_> {
    /// One message as a JSON object appended to `out`: the fixed header's
    /// members, then the attributes. `out` is left as it was on an error.
    pub fn write(&self, payload: &[u8], out: &mut String) -> Result<(), DecodeError> {
        let start = out.len();
        let result = (|| {
            out.push('{');
            let mut members = Members::new();
            let mut attrs = payload;
            if let Some(h) = self.header {
                self.spec
                    .write_struct_members(h, payload, &Path::Root(&h.name), &mut members, out)?;
                attrs = payload.get(h.size..).unwrap_or_default();
            }
            if let Some(set) = self.set {
                let path = Path::Root(&set.name);
                self.spec
                    .write_members(set, attrs, None, &path, &mut members, out)?;
            }
            out.push('}');
            Ok(())
        })();
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

impl Spec {
    /// Decode the attributes in `buf` with set `set`, as values.
    pub fn decode_attrs(&self, set: &str, buf: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        let mut text = String::new();
        self.write_attrs(set, buf, &mut text)?;
        parse_object(&text, set)
    }

    /// Decode the attributes in `buf` with set `set` as one JSON object,
    /// appended to `out` (left as it was on an error).
    pub fn write_attrs(&self, set: &str, buf: &[u8], out: &mut String) -> Result<(), DecodeError> {
        let start = out.len();
        let path = Path::Root(set);
        let result = self
            .set(set)
            .ok_or_else(|| err(&path, "no such attribute set in the spec"))
            .and_then(|s| self.write_set(s, buf, None, &path, out));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// One message as a JSON object appended to `out`: the members of
    /// fixed header `header`, then the attributes of set `set`, side by
    /// side (as the YNL CLI shows them). `out` is left as it was on an
    /// error.
    pub fn write_message(
        &self,
        header: Option<&str>,
        set: Option<&str>,
        payload: &[u8],
        out: &mut String,
    ) -> Result<(), DecodeError> {
        self.message_shape(header, set)?.write(payload, out)
    }

    /// The shape of messages with fixed header `header` and attribute set
    /// `set`, looked up once for the many messages of a dump.
    pub fn message_shape(
        &self,
        header: Option<&str>,
        set: Option<&str>,
    ) -> Result<MessageShape<'_>, DecodeError> {
        let header = match header {
            Some(h) => Some(
                self.structure(h)
                    .ok_or_else(|| err(&Path::Root(h), format!("no struct '{h}'")))?,
            ),
            None => None,
        };
        let set = match set {
            Some(name) => Some(
                self.set(name)
                    .ok_or_else(|| err(&Path::Root(name), "no such attribute set in the spec"))?,
            ),
            None => None,
        };
        Ok(MessageShape {
            spec: self,
            header,
            set,
        })
    }

    fn write_set(
        &self,
        set: &AttrSet,
        buf: &[u8],
        outer: Option<&Scope<'_>>,
        path: &Path<'_>,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        out.push('{');
        self.write_members(set, buf, outer, path, &mut Members::new(), out)?;
        out.push('}');
        Ok(())
    }

    /// The attributes of `buf` as members: each once, in wire order; a
    /// multi-attr as one array of all its occurrences (at its first); any
    /// other attribute that repeats as its last occurrence, as the
    /// kernel's YNL library keeps it.
    fn write_members(
        &self,
        set: &AttrSet,
        buf: &[u8],
        outer: Option<&Scope<'_>>,
        path: &Path<'_>,
        members: &mut Members,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        if repeats(buf).map_err(|m| err(path, m))? {
            return self.write_grouped(set, buf, outer, path, members, out);
        }
        // The same four cases as write_grouped, for one occurrence each:
        // kept apart because this is the path of nearly every message, and
        // sharing one function with the grouped path measured 25% slower
        // (73 -> 92 us for the bench's 1001 devices).
        for attr in Attrs::new(buf) {
            let attr = attr.map_err(|e| err(path, e.to_string()))?;
            match set.linked(attr.kind()) {
                None => {
                    members.unknown_key(out, attr.kind());
                    json_text::hex(out, attr.bytes(), None);
                }
                Some(Linked { def, .. }) if matches!(def.kind, AttrKind::Pad | AttrKind::Unused) => {}
                Some(Linked { def, links, key }) => {
                    members.quoted_key(out, key);
                    if def.multi {
                        out.push('[');
                    }
                    if !self.write_scalar(def, links, attr.bytes(), out) {
                        let scope = Scope {
                            set,
                            before: &buf[..offset_of(buf, &attr)],
                            outer,
                        };
                        self.write_value(def, links, attr.bytes(), &scope, path, out)?;
                    }
                    if def.multi {
                        out.push(']');
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Spec::write_members`] for attributes that repeat.
    fn write_grouped(
        &self,
        set: &AttrSet,
        buf: &[u8],
        outer: Option<&Scope<'_>>,
        path: &Path<'_>,
        members: &mut Members,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        let all = Attrs::new(buf)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(path, e.to_string()))?;
        // Positions grouped by attribute number (a stable sort keeps wire
        // order within a group), then the groups in order of first
        // occurrence: n log n however hostile the message.
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by_key(|&i| all[i].kind());
        let mut groups: Vec<&[usize]> = order.chunk_by(|&a, &b| all[a].kind() == all[b].kind()).collect();
        groups.sort_by_key(|g| g.first().copied().unwrap_or_default());
        for group in groups {
            let (Some(&first), Some(&last)) = (group.first(), group.last()) else {
                continue;
            };
            let kind = all[first].kind();
            let scope_of = |i: usize| Scope {
                set,
                before: &buf[..offset_of(buf, &all[i])],
                outer,
            };
            match set.linked(kind) {
                None => {
                    members.unknown_key(out, kind);
                    json_text::hex(out, all[last].bytes(), None);
                }
                Some(Linked { def, .. }) if matches!(def.kind, AttrKind::Pad | AttrKind::Unused) => {}
                Some(Linked { def, links, key }) if def.multi => {
                    members.quoted_key(out, key);
                    out.push('[');
                    let mut items = Items::new();
                    for &i in group {
                        items.next(out);
                        self.write_value(def, links, all[i].bytes(), &scope_of(i), path, out)?;
                    }
                    out.push(']');
                }
                Some(Linked { def, links, key }) => {
                    // The last occurrence is the value, but each must
                    // decode, as when every one was decoded in turn.
                    let mut discarded = String::new();
                    for &i in group.iter().take(group.len() - 1) {
                        self.write_value(def, links, all[i].bytes(), &scope_of(i), path, &mut discarded)?;
                        discarded.clear();
                    }
                    members.quoted_key(out, key);
                    self.write_value(def, links, all[last].bytes(), &scope_of(last), path, out)?;
                }
            }
        }
        Ok(())
    }

    /// An integer attribute's value, when it has the size its type needs:
    /// the common case of [`Spec::write_value`], inline in the loop over a
    /// message's attributes. `write_value`, the decoder's largest function,
    /// was the largest item of a dump's wasm profile when called for every
    /// attribute. `false`, with nothing written, for any other attribute,
    /// which `write_value` decodes or reports.
    #[inline]
    fn write_scalar(&self, def: &AttrDef, links: Links, raw: &[u8], out: &mut String) -> bool {
        let (size, signed) = match def.kind {
            AttrKind::Uint | AttrKind::Sint if matches!(raw.len(), 4 | 8) => {
                (raw.len(), def.kind == AttrKind::Sint)
            }
            k => match k.fixed_int() {
                Some(int) => int,
                None => return false,
            },
        };
        let Ok(v) = read_int(raw, size, signed, def.big_endian) else {
            return false;
        };
        self.write_attr_int(def, links, v, out);
        true
    }

    /// `v` as attribute `def` shows it: its enum or flags, display hint
    /// and byte order. The one formatting of an integer attribute, for
    /// [`Spec::write_scalar`] and [`Spec::write_value`] alike.
    #[inline]
    fn write_attr_int(&self, def: &AttrDef, links: Links, v: Int, out: &mut String) {
        self.write_int(
            v,
            links.enumeration.and_then(|i| self.enum_at(i)),
            def.enum_as_flags,
            def.display_hint,
            def.big_endian,
            out,
        );
    }

    /// One attribute's value; `scope` is its own set (with what came
    /// before it) and the sets around it.
    fn write_value(
        &self,
        def: &AttrDef,
        links: Links,
        raw: &[u8],
        scope: &Scope<'_>,
        set_path: &Path<'_>,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        let path = Path::Field(set_path, &def.name);
        match def.kind {
            AttrKind::Flag => out.push_str("true"),
            AttrKind::String => write_kernel_string(out, raw),
            AttrKind::Uint | AttrKind::Sint => {
                let size = match raw.len() {
                    4 | 8 => raw.len(),
                    n => {
                        return Err(err(
                            &path,
                            format!("a variable-size integer of {n} bytes (4 or 8 expected)"),
                        ));
                    }
                };
                let v = int_at(raw, size, def.kind == AttrKind::Sint, def.big_endian, &path)?;
                self.write_attr_int(def, links, v, out);
            }
            AttrKind::Binary => {
                if let Some(s) = &def.structure {
                    self.write_struct(s, raw, &path, out)?;
                } else if let Some((size, signed)) = def.sub_type.and_then(AttrKind::fixed_int) {
                    out.push('[');
                    let mut items = Items::new();
                    for c in raw.chunks_exact(size) {
                        items.next(out);
                        int_at(c, size, signed, def.big_endian, &path)?.write(out);
                    }
                    out.push(']');
                } else {
                    write_bytes(out, raw, def.display_hint);
                }
            }
            AttrKind::Nest => {
                let set = self.nested_set(links, &path)?;
                self.write_set(set, raw, Some(scope), &path, out)?;
            }
            AttrKind::IndexedArray => {
                out.push('[');
                let mut items = Items::new();
                for item in Attrs::new(raw) {
                    let item = item.map_err(|e| err(&path, e.to_string()))?;
                    let at = Path::Index(&path, item.kind());
                    items.next(out);
                    match def.sub_type {
                        Some(AttrKind::Nest) => {
                            let set = self.nested_set(links, &path)?;
                            self.write_set(set, item.bytes(), Some(scope), &at, out)?;
                        }
                        Some(t) if t.fixed_int().is_some() => {
                            let (size, signed) = t.fixed_int().unwrap_or((0, false));
                            let v = int_at(item.bytes(), size, signed, def.big_endian, &at)?;
                            self.write_int(v, None, false, def.display_hint, def.big_endian, out);
                        }
                        _ => write_bytes(out, item.bytes(), def.display_hint),
                    }
                }
                out.push(']');
            }
            AttrKind::NestTypeValue => {
                out.push('{');
                let mut members = Members::new();
                let mut level = raw;
                for name in &def.type_value {
                    let first = Attrs::new(level)
                        .next()
                        .ok_or_else(|| err(&path, format!("missing the '{name}' level")))?
                        .map_err(|e| err(&path, e.to_string()))?;
                    members.key(out, name);
                    json_text::uint(out, u64::from(first.kind()));
                    level = first.bytes();
                }
                let set = self.nested_set(links, &path)?;
                self.write_members(set, level, Some(scope), &path, &mut members, out)?;
                out.push('}');
            }
            AttrKind::Bitfield32 => {
                let v = int_at(raw, 4, false, false, &path)?;
                let s = int_at(raw.get(4..).unwrap_or_default(), 4, false, false, &path)?;
                let enumeration = links.enumeration.and_then(|i| self.enum_at(i));
                out.push_str("{\"value\":");
                self.write_int(v, enumeration, def.enum_as_flags, None, false, out);
                out.push_str(",\"selector\":");
                self.write_int(s, enumeration, def.enum_as_flags, None, false, out);
                out.push('}');
            }
            AttrKind::SubMessage => self.write_sub_message(def, raw, scope, &path, out)?,
            k => match k.fixed_int() {
                Some((size, signed)) => {
                    let v = int_at(raw, size, signed, def.big_endian, &path)?;
                    self.write_attr_int(def, links, v, out);
                }
                None => json_text::hex(out, raw, None),
            },
        }
        Ok(())
    }

    fn nested_set(&self, links: Links, path: &Path<'_>) -> Result<&AttrSet, DecodeError> {
        links
            .nested
            .and_then(|i| self.set_at(i))
            .ok_or_else(|| err(path, "the spec names no nested attribute set"))
    }

    fn write_sub_message(
        &self,
        def: &AttrDef,
        raw: &[u8],
        scope: &Scope<'_>,
        path: &Path<'_>,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        let selector = def.selector.as_deref().unwrap_or_default();
        let text = self
            .selector_text(selector, scope)
            .ok_or_else(|| err(path, format!("its selector '{selector}' must come before it")))?;
        let format = self.sub_message_format(def, &text).map_err(|m| err(path, m))?;
        out.push('{');
        let mut members = Members::new();
        let mut offset = 0;
        if let Some(h) = &format.fixed_header {
            let def = self
                .structure(h)
                .ok_or_else(|| err(path, format!("no struct '{h}'")))?;
            self.write_struct_members(def, raw, path, &mut members, out)?;
            offset = def.size;
        }
        if let Some(s) = &format.attribute_set
            && let Some(set) = self.set(s)
        {
            let attrs = raw.get(offset..).unwrap_or_default();
            self.write_members(set, attrs, Some(scope), path, &mut members, out)?;
        }
        out.push('}');
        Ok(())
    }

    /// The value of attribute `name` as a sub-message selector compares
    /// it: from the innermost enclosing set that has it before the
    /// sub-message (its last occurrence there), an enum's name or the
    /// number's text.
    fn selector_text(&self, name: &str, scope: &Scope<'_>) -> Option<String> {
        scope.iter().find_map(|s| {
            let value = s.set.by_name(name)?.value;
            let Linked { def, links, .. } = s.set.linked(value)?;
            let raw = Attrs::new(s.before)
                .map_while(Result::ok)
                .filter(|a| a.kind() == def.value)
                .last()?
                .bytes();
            let mut text = String::new();
            let path = Path::Root(name);
            // A selector is a scalar: the scope is never consulted.
            self.write_value(def, links, raw, s, &path, &mut text).ok()?;
            Some(match serde_json::from_str::<Value>(&text) {
                Ok(Value::String(s)) => s,
                _ => text,
            })
        })
    }

    /// The format of sub-message attribute `def` its selector's value
    /// `text` picks.
    pub(super) fn sub_message_format(&self, def: &AttrDef, text: &str) -> Result<&SubMessageFormat, String> {
        let selector = def.selector.as_deref().unwrap_or_default();
        self.sub_message(def.sub_message.as_deref().unwrap_or_default())
            .unwrap_or_default()
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
        let mut text = String::new();
        self.write_struct(name, raw, &Path::Root(path), &mut text)?;
        parse_object(&text, path)
    }

    fn write_struct(
        &self,
        name: &str,
        raw: &[u8],
        path: &Path<'_>,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        let def = self
            .structure(name)
            .ok_or_else(|| err(path, format!("no struct '{name}'")))?;
        out.push('{');
        self.write_struct_members(def, raw, path, &mut Members::new(), out)?;
        out.push('}');
        Ok(())
    }

    fn write_struct_members(
        &self,
        def: &StructDef,
        raw: &[u8],
        path: &Path<'_>,
        members: &mut Members,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        let name = &def.name;
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
        let mut offset = 0;
        for m in &def.members {
            let bytes = raw.get(offset..offset + m.len).unwrap_or_default();
            offset += m.len;
            if m.kind != AttrKind::Pad {
                members.key(out, &m.name);
                self.write_member(m, bytes, path, out)?;
            }
        }
        Ok(())
    }

    fn write_member(
        &self,
        m: &MemberDef,
        bytes: &[u8],
        path: &Path<'_>,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        match m.kind {
            AttrKind::Binary => match &m.structure {
                Some(s) => self.write_struct(s, bytes, path, out)?,
                None => write_bytes(out, bytes, m.display_hint),
            },
            k => {
                let (size, signed) = k.fixed_int().unwrap_or((bytes.len(), false));
                let v = int_at(bytes, size, signed, m.big_endian, path)?;
                self.write_int(
                    v,
                    m.enumeration.as_deref().and_then(|e| self.enumeration(e)),
                    m.enum_as_flags,
                    m.display_hint,
                    m.big_endian,
                    out,
                );
            }
        }
        Ok(())
    }

    /// An integer as the spec shows it: an enum name, a list of flag names,
    /// or text per its display hint.
    #[inline]
    fn write_int(
        &self,
        v: Int,
        enumeration: Option<&EnumDef>,
        as_flags: bool,
        hint: Option<DisplayHint>,
        big_endian: bool,
        out: &mut String,
    ) {
        if let Some(e) = enumeration {
            let raw = v.bits();
            if e.flags || as_flags {
                // Set bits only, lowest first (the order the names had when
                // every one of the 64 bits was tried).
                out.push('[');
                let mut items = Items::new();
                let mut rest = raw;
                while rest != 0 {
                    let bit = u64::from(rest.trailing_zeros());
                    rest &= rest - 1;
                    items.next(out);
                    match e.quoted_name_of(bit) {
                        Some(n) => out.push_str(n),
                        None => json_text::uint(out, 1u64 << bit),
                    }
                }
                out.push(']');
                return;
            }
            match e.quoted_name_of(raw) {
                Some(n) => out.push_str(n),
                None => v.write(out),
            }
            return;
        }
        match hint {
            Some(hint) => write_hinted(v, hint, big_endian, out),
            None => v.write(out),
        }
    }
}

/// An integer shown per its display hint: kept out of line, as few
/// attributes have one and the formatting would weigh on every caller.
#[cold]
#[inline(never)]
fn write_hinted(v: Int, hint: DisplayHint, big_endian: bool, out: &mut String) {
    match (hint, v.unsigned()) {
        (DisplayHint::Hex, Some(n)) => {
            let _ = write!(out, "\"{n:#x}\"");
        }
        (DisplayHint::Ipv4, Some(n)) => {
            // A big-endian u32 already reads as the address's number.
            let n = u32::try_from(n).unwrap_or_default();
            let n = if big_endian { n } else { n.swap_bytes() };
            let _ = write!(out, "\"{}\"", Ipv4Addr::from(n));
        }
        _ => v.write(out),
    }
}

/// Whether an attribute number occurs twice in `buf` (then members need
/// grouping); the first malformed attribute's error.
fn repeats(buf: &[u8]) -> Result<bool, String> {
    // The kernel's sets number their attributes below 128 (the largest,
    // nl80211's, is near 340): a bitmap for those, a scan for the rest.
    let mut seen = [0u64; 2];
    let mut high: Vec<u16> = Vec::new();
    for attr in Attrs::new(buf) {
        let kind = attr.map_err(|e| e.to_string())?.kind();
        if let Some(word) = seen.get_mut(usize::from(kind / 64)) {
            let bit = 1u64 << (kind % 64);
            if *word & bit != 0 {
                return Ok(true);
            }
            *word |= bit;
        } else if high.contains(&kind) {
            return Ok(true);
        } else {
            high.push(kind);
            if high.len() > 64 {
                // Many high numbers: group rather than scan quadratically.
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Bytes as text: per the display hint, else hex without separators (what
/// the YNL CLI prints for bytes).
fn write_bytes(out: &mut String, raw: &[u8], hint: Option<DisplayHint>) {
    match hint {
        Some(DisplayHint::Mac) => json_text::hex(out, raw, Some(':')),
        Some(DisplayHint::Hex) => json_text::hex(out, raw, Some(' ')),
        Some(DisplayHint::Ipv4 | DisplayHint::Ipv4OrV6) if raw.len() == 4 => {
            let _ = write!(out, "\"{}\"", Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]));
        }
        Some(DisplayHint::Ipv6 | DisplayHint::Ipv4OrV6) if raw.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(raw);
            let _ = write!(out, "\"{}\"", Ipv6Addr::from(b));
        }
        Some(DisplayHint::Uuid) if raw.len() == 16 => {
            let mut h = String::with_capacity(34);
            json_text::hex(&mut h, raw, None);
            let h = h.trim_matches('"');
            let _ = write!(
                out,
                "\"{}-{}-{}-{}-{}\"",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            );
        }
        _ => json_text::hex(out, raw, None),
    }
}

/// A kernel string: up to its NUL, invalid UTF-8 replaced.
fn write_kernel_string(out: &mut String, raw: &[u8]) {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    json_text::string(out, &String::from_utf8_lossy(&raw[..end]));
}

/// Text the decoder wrote, as the object it is.
fn parse_object(text: &str, path: &str) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        // The writer only writes objects here; a failure is a bug in it,
        // reported rather than panicking on a kernel message.
        _ => Err(DecodeError {
            path: path.to_owned(),
            message: "the decoder wrote no JSON object (a bug: please report it)".into(),
        }),
    }
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

    /// A set that nests itself, each level ending in a repeated attribute
    /// (two `a`; the last is the value, as the kernel's YNL library keeps
    /// it). Deciding to group only when the repeat is met, after the
    /// nested level was already written, writes each level twice per
    /// level above it: 2^depth. The earlier pre-scan (`repeats`) chose the
    /// grouped path before writing anything: linear. Depth 32 is ~800
    /// bytes, well inside one dump part; such nesting is legal for a
    /// recursive spec (ovs_flow's actions, an operator's own spec).
    #[test]
    fn a_self_nesting_set_with_a_repeat_at_each_level_decodes_in_linear_time() {
        const RECURSIVE: &str = "
name: t
protocol: genetlink
attribute-sets:
  - name: r
    attributes:
      - {name: a, type: u8}
      - {name: sub, type: nest, nested-attributes: r}
operations:
  list:
    - {name: get, attribute-set: r, do: {reply: {attributes: [a]}}}
";
        const DEPTH: usize = 32;
        let mut msg = [attr(1, &[0]), attr(1, &[1])].concat();
        for _ in 0..DEPTH {
            msg = [attr(2, &msg), attr(1, &[0]), attr(1, &[1])].concat();
        }
        assert!(msg.len() < 1024, "{} bytes", msg.len());
        // Expected text, written by hand: each level {"sub":..,"a":1}.
        let mut expected = String::from("{\"a\":1}");
        for _ in 0..DEPTH {
            expected = format!("{{\"sub\":{expected},\"a\":1}}");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let spec = Spec::load(RECURSIVE).unwrap_or_else(|e| panic!("{e}"));
            let mut out = String::new();
            let started = std::time::Instant::now();
            let result = spec.write_attrs("r", &msg, &mut out).map_err(|e| e.to_string());
            let _ = tx.send((result, out, started.elapsed()));
        });
        let (result, out, took) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("decoding ~800 bytes took over 10 s (the old pre-scan took microseconds)");
        result.unwrap_or_else(|e| panic!("{e}"));
        let parse =
            |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap_or_else(|e| panic!("{e}: {t}"));
        assert_eq!(parse(&out), parse(&expected), "took {took:?}");
    }
}
