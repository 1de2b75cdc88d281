//! A YNL spec resolved into what the codec needs: every attribute, enum
//! entry and operation numbered by the spec's own rules (`value`,
//! `value-start`, `enum-model`), references between sets checked once at
//! load, so decoding and encoding never meet a dangling name.

// Names are looked up on every call (a client's keys, an operation's
// sets); the tables are built from the spec alone, so a client cannot
// grow a chain, and SipHash's cost buys nothing here.
use rustc_hash::FxHashMap;

use super::raw::{self, NumOrName};

/// Why a spec could not be loaded. Names the spec and the place in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("YNL spec '{spec}': {place}: {message}")]
pub struct SpecError {
    /// The spec's family name (or "?" before it is known).
    pub spec: String,
    /// Where, as a path of YAML keys and names.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

/// The spec's netlink protocol flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `genetlink`.
    Genetlink,
    /// `genetlink-c`.
    GenetlinkC,
    /// `genetlink-legacy`: may carry a fixed header after the genl header.
    GenetlinkLegacy,
}

/// An attribute's wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// A reserved number; never sent.
    Unused,
    /// Alignment padding; skipped.
    Pad,
    /// Present or absent, no payload.
    Flag,
    /// 8-bit unsigned.
    U8,
    /// 16-bit unsigned.
    U16,
    /// 32-bit unsigned.
    U32,
    /// 64-bit unsigned.
    U64,
    /// 8-bit signed.
    S8,
    /// 16-bit signed.
    S16,
    /// 32-bit signed.
    S32,
    /// 64-bit signed.
    S64,
    /// Unsigned, 4 or 8 bytes as the value needs.
    Uint,
    /// Signed, 4 or 8 bytes as the value needs.
    Sint,
    /// NUL-terminated string.
    String,
    /// Bytes, optionally a struct or an array of scalars.
    Binary,
    /// A nested attribute set.
    Nest,
    /// Nested items whose attribute types are their indexes.
    IndexedArray,
    /// Nests whose attribute types carry values (`type-value`).
    NestTypeValue,
    /// `struct nla_bitfield32`: value and selector.
    Bitfield32,
    /// A payload whose format a sibling attribute selects.
    SubMessage,
}

impl AttrKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unused" => Self::Unused,
            "pad" => Self::Pad,
            "flag" => Self::Flag,
            "u8" => Self::U8,
            "u16" => Self::U16,
            "u32" => Self::U32,
            "u64" => Self::U64,
            "s8" => Self::S8,
            "s16" => Self::S16,
            "s32" => Self::S32,
            "s64" => Self::S64,
            "uint" => Self::Uint,
            "sint" => Self::Sint,
            "string" => Self::String,
            "binary" => Self::Binary,
            "nest" => Self::Nest,
            "indexed-array" => Self::IndexedArray,
            "nest-type-value" => Self::NestTypeValue,
            "bitfield32" => Self::Bitfield32,
            "sub-message" => Self::SubMessage,
            _ => return None,
        })
    }

    /// The size and signedness of a fixed-size integer type.
    pub fn fixed_int(self) -> Option<(usize, bool)> {
        Some(match self {
            Self::U8 => (1, false),
            Self::U16 => (2, false),
            Self::U32 => (4, false),
            Self::U64 => (8, false),
            Self::S8 => (1, true),
            Self::S16 => (2, true),
            Self::S32 => (4, true),
            Self::S64 => (8, true),
            _ => return None,
        })
    }

    /// Whether the type holds an integer.
    pub fn is_int(self) -> bool {
        self.fixed_int().is_some() || matches!(self, Self::Uint | Self::Sint)
    }

    /// Whether the integer is signed.
    pub fn is_signed(self) -> bool {
        matches!(self, Self::S8 | Self::S16 | Self::S32 | Self::S64 | Self::Sint)
    }
}

/// How a value is shown (and read back from JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayHint {
    /// `aa:bb:cc:dd:ee:ff`.
    Mac,
    /// Dotted quad.
    Ipv4,
    /// RFC 5952 text.
    Ipv6,
    /// Hex (bytes space-separated, integers `0x..`).
    Hex,
    /// RFC 4122 text.
    Uuid,
    /// IPv4 text for 4 bytes, IPv6 text for 16.
    Ipv4OrV6,
}

impl DisplayHint {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mac" => Self::Mac,
            "ipv4" => Self::Ipv4,
            "ipv6" => Self::Ipv6,
            "hex" => Self::Hex,
            "uuid" => Self::Uuid,
            "ipv4-or-v6" => Self::Ipv4OrV6,
            _ => return None,
        })
    }
}

/// An `enum` or `flags` definition.
#[derive(Debug, Clone)]
pub struct EnumDef {
    /// Its name.
    pub name: String,
    /// `flags`: entries are bit numbers and values are masks.
    pub flags: bool,
    /// Entries with their raw values (bit numbers for flags).
    pub entries: Vec<(String, u64)>,
    /// Each entry's name as a JSON string (same order as `entries`),
    /// escaped once at load instead of on every value decoded.
    quoted: Vec<String>,
}

impl EnumDef {
    /// The entry whose raw value is `raw`.
    pub fn name_of(&self, raw: u64) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, v)| *v == raw)
            .map(|(n, _)| n.as_str())
    }

    /// The name of the entry whose raw value is `raw`, as a JSON string.
    pub(super) fn quoted_name_of(&self, raw: u64) -> Option<&str> {
        let i = self.entries.iter().position(|(_, v)| *v == raw)?;
        self.quoted.get(i).map(String::as_str)
    }

    /// The raw value of entry `name`.
    pub fn value_of(&self, name: &str) -> Option<u64> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// Integer range and length checks from the spec (`checks`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checks {
    /// Smallest value.
    pub min: Option<i128>,
    /// Largest value.
    pub max: Option<i128>,
    /// Shortest payload (strings: without the NUL).
    pub min_len: Option<usize>,
    /// Longest payload.
    pub max_len: Option<usize>,
    /// Exact payload length.
    pub exact_len: Option<usize>,
}

/// One member of a `struct` definition.
#[derive(Debug, Clone)]
pub struct MemberDef {
    /// Its name.
    pub name: String,
    /// Its type: an integer type, `pad` or `binary`.
    pub kind: AttrKind,
    /// Big-endian on the wire.
    pub big_endian: bool,
    /// Enum naming its values.
    pub enumeration: Option<String>,
    /// Show the enum as a set of flags.
    pub enum_as_flags: bool,
    /// Byte length (pad, binary).
    pub len: usize,
    /// Display hint.
    pub display_hint: Option<DisplayHint>,
    /// Nested struct (binary members).
    pub structure: Option<String>,
}

/// A `struct` definition with its resolved size.
#[derive(Debug, Clone)]
pub struct StructDef {
    /// Its name.
    pub name: String,
    /// Members in wire order.
    pub members: Vec<MemberDef>,
    /// Total size in bytes.
    pub size: usize,
}

/// One attribute of a set.
#[derive(Debug, Clone)]
pub struct AttrDef {
    /// Its name.
    pub name: String,
    /// Its number on the wire.
    pub value: u16,
    /// Its type.
    pub kind: AttrKind,
    /// Big-endian on the wire (`byte-order: big-endian`).
    pub big_endian: bool,
    /// May repeat: shown as a JSON array.
    pub multi: bool,
    /// The set of a nest, indexed-array or nest-type-value.
    pub nested: Option<String>,
    /// Enum naming its values.
    pub enumeration: Option<String>,
    /// Show an `enum` as a set of flags.
    pub enum_as_flags: bool,
    /// Display hint.
    pub display_hint: Option<DisplayHint>,
    /// The struct a binary holds.
    pub structure: Option<String>,
    /// Item type of an indexed-array or of a binary array.
    pub sub_type: Option<AttrKind>,
    /// Checks applied on encode.
    pub checks: Checks,
    /// The sub-message of a `sub-message` attribute.
    pub sub_message: Option<String>,
    /// The sibling attribute selecting the sub-message's format.
    pub selector: Option<String>,
    /// `nest-type-value` levels.
    pub type_value: Vec<String>,
}

/// An attribute set.
#[derive(Debug, Clone)]
pub struct AttrSet {
    /// Its name.
    pub name: String,
    /// Attributes in spec order.
    pub attrs: Vec<AttrDef>,
    by_name: FxHashMap<String, usize>,
    by_value: ValueIndex,
    /// Per attribute (same order as `attrs`): its references resolved to
    /// positions in the spec's tables, filled by [`Spec::link`].
    links: Vec<Links>,
    /// Per attribute: its JSON key, `"name":`, escaped once at load.
    keys: Vec<String>,
}

/// An attribute of a set as the decoder needs it.
#[derive(Clone, Copy)]
pub(super) struct Linked<'a> {
    /// Its definition.
    pub def: &'a AttrDef,
    /// Its references, resolved.
    pub links: Links,
    /// Its JSON key with the colon: `"name":`.
    pub key: &'a str,
}

/// Where an attribute's named references point, as positions in the
/// spec's tables: resolved once at load so the decoder indexes instead of
/// hashing a name for every attribute of every message.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Links {
    /// The enum or flags definition (`enum`).
    pub enumeration: Option<usize>,
    /// The nested attribute set (`nested-attributes`).
    pub nested: Option<usize>,
}

/// Attribute number to position in the set.
#[derive(Debug, Clone)]
enum ValueIndex {
    /// Indexed by the attribute number (`NONE` where there is none): the
    /// kernel's sets are numbered densely from 0 or 1.
    Dense(Vec<u32>),
    /// For a set numbered so sparsely that a table would mostly be holes.
    Sparse(FxHashMap<u16, usize>),
}

impl ValueIndex {
    const NONE: u32 = u32::MAX;
    /// A dense table is used while it stays within this many slots per
    /// attribute (plus a little), so a spec's odd numbering cannot make
    /// the host allocate 16k slots for a two-attribute set.
    const SLOTS_PER_ATTR: usize = 4;

    fn new(attrs: &[AttrDef]) -> Self {
        let max = attrs.iter().map(|a| usize::from(a.value)).max().unwrap_or(0);
        if max < attrs.len() * Self::SLOTS_PER_ATTR + 16 {
            let mut table = vec![Self::NONE; max + 1];
            for (i, a) in attrs.iter().enumerate() {
                // Later duplicates win, as they did in the map.
                table[usize::from(a.value)] = u32::try_from(i).unwrap_or(Self::NONE);
            }
            Self::Dense(table)
        } else {
            Self::Sparse(attrs.iter().enumerate().map(|(i, a)| (a.value, i)).collect())
        }
    }

    #[inline(always)]
    fn get(&self, value: u16) -> Option<usize> {
        match self {
            Self::Dense(t) => t
                .get(usize::from(value))
                .filter(|&&i| i != Self::NONE)
                .map(|&i| i as usize),
            Self::Sparse(m) => m.get(&value).copied(),
        }
    }
}

impl AttrSet {
    fn new(name: String, attrs: Vec<AttrDef>) -> Self {
        let by_name = attrs
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
        let by_value = ValueIndex::new(&attrs);
        Self {
            name,
            links: vec![Links::default(); attrs.len()],
            keys: attrs
                .iter()
                .map(|a| super::json_text::quoted(&a.name) + ":")
                .collect(),
            attrs,
            by_name,
            by_value,
        }
    }

    /// The attribute named `name`.
    pub fn by_name(&self, name: &str) -> Option<&AttrDef> {
        self.by_name.get(name).map(|&i| &self.attrs[i])
    }

    /// The attribute numbered `value`.
    pub fn by_value(&self, value: u16) -> Option<&AttrDef> {
        self.by_value.get(value).map(|i| &self.attrs[i])
    }

    /// The attribute numbered `value` with its resolved references.
    #[inline(always)]
    pub(super) fn linked(&self, value: u16) -> Option<Linked<'_>> {
        let i = self.by_value.get(value)?;
        Some(Linked {
            def: &self.attrs[i],
            links: self.links.get(i).copied().unwrap_or_default(),
            key: self.keys.get(i).map_or("", String::as_str),
        })
    }
}

/// Definitions by name, kept in a vector so other definitions can refer
/// to them by position.
#[derive(Debug, Clone)]
struct Table<T> {
    items: Vec<T>,
    ids: FxHashMap<String, usize>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            ids: FxHashMap::default(),
        }
    }
}

impl<T> Table<T> {
    /// Add (or replace) `name`.
    fn insert(&mut self, name: String, item: T) {
        match self.ids.get(&name) {
            Some(&i) => self.items[i] = item,
            None => {
                self.ids.insert(name, self.items.len());
                self.items.push(item);
            }
        }
    }

    fn id(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    fn get(&self, name: &str) -> Option<&T> {
        self.id(name).map(|i| &self.items[i])
    }

    fn contains_key(&self, name: &str) -> bool {
        self.ids.contains_key(name)
    }

    fn values(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

impl<T> FromIterator<(String, T)> for Table<T> {
    fn from_iter<I: IntoIterator<Item = (String, T)>>(iter: I) -> Self {
        let mut t = Self::default();
        for (name, item) in iter {
            t.insert(name, item);
        }
        t
    }
}

/// One format of a sub-message.
#[derive(Debug, Clone)]
pub struct SubMessageFormat {
    /// The selector's value that picks it.
    pub value: String,
    /// Struct before the attributes.
    pub fixed_header: Option<String>,
    /// Attribute set after the header.
    pub attribute_set: Option<String>,
}

/// The request and reply of one mode (`do` or `dump`) of an operation.
#[derive(Debug, Clone, Default)]
pub struct OpMode {
    /// Attributes the request may carry; `None` when the mode takes no
    /// request at all.
    pub request: Option<Vec<String>>,
    /// Attributes the reply carries; `None` when there is no reply.
    pub reply: Option<Vec<String>>,
}

/// An operation (command) of the family.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Its name.
    pub name: String,
    /// The command number of requests (user to kernel).
    pub request_value: Option<u8>,
    /// The command number of replies and notifications (kernel to user).
    pub reply_value: Option<u8>,
    /// Its attribute set.
    pub attribute_set: Option<String>,
    /// Struct after the genl header.
    pub fixed_header: Option<String>,
    /// The kernel requires CAP_NET_ADMIN (`admin-perm`).
    pub admin_perm: bool,
    /// The `do` mode.
    pub do_: Option<OpMode>,
    /// The `dump` mode.
    pub dump: Option<OpMode>,
    /// A notification: the attributes of an `event`, or the op whose
    /// reply format a `notify` reuses.
    pub notification: Option<Vec<String>>,
    /// The multicast group a notification is sent to.
    pub mcgrp: Option<String>,
}

/// A loaded, resolved spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The family name.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Operations in spec order.
    pub ops: Vec<Operation>,
    /// Multicast group names.
    pub mcast_groups: Vec<String>,
    enums: Table<EnumDef>,
    structs: Table<StructDef>,
    sets: Table<AttrSet>,
    sub_messages: FxHashMap<String, Vec<SubMessageFormat>>,
}

struct Loader {
    spec: String,
    consts: FxHashMap<String, i128>,
}

impl Loader {
    fn err(&self, place: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            spec: self.spec.clone(),
            place: place.into(),
            message: message.into(),
        }
    }

    fn num(&self, place: &str, v: &NumOrName) -> Result<i128, SpecError> {
        match v {
            NumOrName::Signed(n) => Ok((*n).into()),
            NumOrName::Unsigned(n) => Ok((*n).into()),
            NumOrName::Name(s) => named_limit(s)
                .or_else(|| self.consts.get(s).copied())
                .or_else(|| parse_int_text(s))
                .ok_or_else(|| self.err(place, format!("'{s}' is neither a number nor a defined constant"))),
        }
    }

    fn ranged<T: TryFrom<i128>>(&self, place: &str, v: &NumOrName) -> Result<T, SpecError> {
        let n = self.num(place, v)?;
        T::try_from(n).map_err(|_| self.err(place, format!("{n} is out of range here")))
    }
}

fn named_limit(s: &str) -> Option<i128> {
    Some(match s {
        "u8-max" => u8::MAX.into(),
        "u16-max" => u16::MAX.into(),
        "u32-max" => u32::MAX.into(),
        "u64-max" => u64::MAX.into(),
        "s8-max" => i8::MAX.into(),
        "s16-max" => i16::MAX.into(),
        "s32-max" => i32::MAX.into(),
        "s64-max" => i64::MAX.into(),
        "s8-min" => i8::MIN.into(),
        "s16-min" => i16::MIN.into(),
        "s32-min" => i32::MIN.into(),
        "s64-min" => i64::MIN.into(),
        _ => return None,
    })
}

fn parse_int_text(s: &str) -> Option<i128> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Spec {
    /// Load a spec from its YAML text.
    pub fn load(yaml: &str) -> Result<Self, SpecError> {
        let raw: raw::Spec = serde_saphyr::from_str(yaml).map_err(|e| SpecError {
            spec: guess_name(yaml),
            place: "YAML".into(),
            message: one_line(&e.to_string()),
        })?;
        Self::resolve(raw)
    }

    fn resolve(raw: raw::Spec) -> Result<Self, SpecError> {
        let mut ld = Loader {
            spec: raw.name.clone(),
            consts: FxHashMap::default(),
        };
        let protocol = match raw.protocol.as_deref().unwrap_or("genetlink") {
            "genetlink" => Protocol::Genetlink,
            "genetlink-c" => Protocol::GenetlinkC,
            "genetlink-legacy" => Protocol::GenetlinkLegacy,
            other => {
                return Err(ld.err(
                    "protocol",
                    format!("'{other}' is not a generic netlink protocol (genetlink, genetlink-c, genetlink-legacy)"),
                ));
            }
        };

        // Constants first: enums, checks and lengths may name them.
        for d in raw.definitions.iter().filter(|d| d.kind == "const") {
            let place = format!("definitions.{}", d.name);
            let v = d
                .value
                .as_ref()
                .ok_or_else(|| ld.err(&place, "a const needs a value"))?;
            // String constants (group names for C code) take no part in
            // numbering.
            let Ok(v) = ld.num(&place, v) else { continue };
            // Checks may name a constant with its C prefix (`wg-key-len`).
            if let Some(prefix) = &d.name_prefix {
                ld.consts.insert(format!("{prefix}{}", d.name), v);
            }
            ld.consts.insert(d.name.clone(), v);
        }

        let mut enums = Table::default();
        for d in raw
            .definitions
            .iter()
            .filter(|d| d.kind == "enum" || d.kind == "flags")
        {
            let place = format!("definitions.{}", d.name);
            let start: u64 = match &d.value_start {
                Some(v) => ld.ranged(&place, v)?,
                None => 0,
            };
            let mut entries = Vec::with_capacity(d.entries.len());
            let mut next = start;
            for e in &d.entries {
                let (name, value) = match e {
                    raw::EnumEntry::Name(n) => (n.clone(), next),
                    raw::EnumEntry::Full { name, value } => {
                        let v = match value {
                            Some(v) => ld.ranged(&format!("{place}.{name}"), v)?,
                            None => next,
                        };
                        (name.clone(), v)
                    }
                };
                if d.kind == "flags" && value >= 64 {
                    return Err(ld.err(format!("{place}.{name}"), "a flag's bit number must be below 64"));
                }
                next = value + 1;
                entries.push((name, value));
            }
            enums.insert(
                d.name.clone(),
                EnumDef {
                    name: d.name.clone(),
                    flags: d.kind == "flags",
                    quoted: entries.iter().map(|(n, _)| super::json_text::quoted(n)).collect(),
                    entries,
                },
            );
        }

        let mut structs: Table<StructDef> = Table::default();
        // Structs may nest structs defined later: resolve until stable.
        let mut pending: Vec<&raw::Definition> =
            raw.definitions.iter().filter(|d| d.kind == "struct").collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut left = Vec::new();
            for d in pending {
                match ld.structure(d, &structs, &enums)? {
                    Some(s) => {
                        structs.insert(d.name.clone(), s);
                    }
                    None => left.push(d),
                }
            }
            if left.len() == before {
                let names: Vec<&str> = left.iter().map(|d| d.name.as_str()).collect();
                return Err(ld.err(
                    "definitions",
                    format!("structs {names:?} refer to structs that are not defined (or to each other)"),
                ));
            }
            pending = left;
        }

        let mut sets: Table<AttrSet> = Table::default();
        let mut pending: Vec<&raw::AttrSet> = raw.attribute_sets.iter().collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut left = Vec::new();
            for s in pending {
                match &s.subset_of {
                    Some(parent) if !sets.contains_key(parent) => left.push(s),
                    Some(parent) => {
                        let Some(parent_set) = sets.get(parent) else {
                            left.push(s);
                            continue;
                        };
                        let mut attrs = Vec::new();
                        for a in &s.attributes {
                            let mut def = parent_set.by_name(&a.name).cloned().ok_or_else(|| {
                                ld.err(
                                    format!("attribute-sets.{}.{}", s.name, a.name),
                                    format!("not an attribute of '{parent}', which this set is a subset of"),
                                )
                            })?;
                            // A subset may point a nest at a subset of its own.
                            if let Some(n) = &a.nested_attributes {
                                def.nested = Some(n.clone());
                            }
                            attrs.push(def);
                        }
                        sets.insert(s.name.clone(), AttrSet::new(s.name.clone(), attrs));
                    }
                    None => {
                        let set = ld.attr_set(s)?;
                        sets.insert(s.name.clone(), set);
                    }
                }
            }
            if left.len() == before {
                let names: Vec<&str> = left.iter().map(|s| s.name.as_str()).collect();
                return Err(ld.err(
                    "attribute-sets",
                    format!("sets {names:?} are subsets of sets that do not exist"),
                ));
            }
            pending = left;
        }

        let mut sub_messages = FxHashMap::default();
        for m in &raw.sub_messages {
            let formats = m
                .formats
                .iter()
                .map(|f| SubMessageFormat {
                    value: f.value.clone(),
                    fixed_header: f.fixed_header.clone(),
                    attribute_set: f.attribute_set.clone(),
                })
                .collect();
            sub_messages.insert(m.name.clone(), formats);
        }

        let mcast_groups = raw
            .mcast_groups
            .map(|g| g.list.into_iter().map(|g| g.name).collect())
            .unwrap_or_default();
        let ops = match &raw.operations {
            Some(o) => ld.operations(o)?,
            None => Vec::new(),
        };
        let mut spec = Spec {
            name: raw.name,
            protocol,
            ops,
            mcast_groups,
            enums,
            structs,
            sets,
            sub_messages,
        };
        spec.check_references(&ld)?;
        spec.link();
        Ok(spec)
    }

    /// Every name one part of the spec uses for another must exist, so the
    /// codec never has to fail on a spec's own inconsistency.
    fn check_references(&self, ld: &Loader) -> Result<(), SpecError> {
        for set in self.sets.values() {
            for a in &set.attrs {
                let place = || format!("attribute-sets.{}.{}", set.name, a.name);
                if let Some(n) = &a.nested
                    && !self.sets.contains_key(n)
                {
                    return Err(ld.err(
                        place(),
                        format!("nested-attributes '{n}' is not an attribute set"),
                    ));
                }
                if matches!(a.kind, AttrKind::Nest | AttrKind::NestTypeValue) && a.nested.is_none() {
                    return Err(ld.err(place(), "a nest needs nested-attributes"));
                }
                if a.kind == AttrKind::IndexedArray
                    && a.sub_type == Some(AttrKind::Nest)
                    && a.nested.is_none()
                {
                    return Err(ld.err(place(), "an indexed-array of nests needs nested-attributes"));
                }
                if let Some(e) = &a.enumeration
                    && !self.enums.contains_key(e)
                {
                    return Err(ld.err(place(), format!("enum '{e}' is not defined")));
                }
                if let Some(s) = &a.structure
                    && !self.structs.contains_key(s)
                {
                    return Err(ld.err(place(), format!("struct '{s}' is not defined")));
                }
                if a.kind == AttrKind::SubMessage {
                    let m = a
                        .sub_message
                        .as_ref()
                        .ok_or_else(|| ld.err(place(), "a sub-message needs sub-message"))?;
                    let formats = self
                        .sub_messages
                        .get(m)
                        .ok_or_else(|| ld.err(place(), format!("sub-message '{m}' is not defined")))?;
                    if a.selector.is_none() {
                        return Err(ld.err(place(), "a sub-message needs a selector"));
                    }
                    for f in formats {
                        if let Some(s) = &f.attribute_set
                            && !self.sets.contains_key(s)
                        {
                            return Err(ld.err(
                                format!("sub-messages.{m}.{}", f.value),
                                format!("attribute-set '{s}' is not defined"),
                            ));
                        }
                        if let Some(s) = &f.fixed_header
                            && !self.structs.contains_key(s)
                        {
                            return Err(ld.err(
                                format!("sub-messages.{m}.{}", f.value),
                                format!("fixed-header '{s}' is not defined"),
                            ));
                        }
                    }
                }
            }
        }
        for op in &self.ops {
            let place = || format!("operations.{}", op.name);
            if let Some(s) = &op.attribute_set
                && !self.sets.contains_key(s)
            {
                return Err(ld.err(place(), format!("attribute-set '{s}' is not defined")));
            }
            if let Some(s) = &op.fixed_header
                && !self.structs.contains_key(s)
            {
                return Err(ld.err(place(), format!("fixed-header '{s}' is not defined")));
            }
            let set = op.attribute_set.as_ref().and_then(|s| self.sets.get(s));
            let modes = [&op.do_, &op.dump].into_iter().flatten();
            let lists = modes
                .flat_map(|m| [&m.request, &m.reply])
                .chain([&op.notification])
                .flatten();
            for list in lists {
                for name in list {
                    if set.is_none_or(|s| s.by_name(name).is_none()) {
                        return Err(ld.err(
                            place(),
                            format!(
                                "attribute '{name}' is not in the op's attribute-set '{}'",
                                op.attribute_set.as_deref().unwrap_or("(none)")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolve every attribute's references to positions in the spec's
    /// tables (see [`Links`]); names that do not resolve stay `None`.
    fn link(&mut self) {
        let all: Vec<Vec<Links>> = self
            .sets
            .values()
            .map(|set| {
                set.attrs
                    .iter()
                    .map(|a| Links {
                        enumeration: a.enumeration.as_deref().and_then(|e| self.enums.id(e)),
                        nested: a.nested.as_deref().and_then(|n| self.sets.id(n)),
                    })
                    .collect()
            })
            .collect();
        for (set, links) in self.sets.items.iter_mut().zip(all) {
            set.links = links;
        }
    }

    /// The attribute set at position `i` (from [`Links::nested`]).
    pub(super) fn set_at(&self, i: usize) -> Option<&AttrSet> {
        self.sets.items.get(i)
    }

    /// The enum at position `i` (from [`Links::enumeration`]).
    pub(super) fn enum_at(&self, i: usize) -> Option<&EnumDef> {
        self.enums.items.get(i)
    }

    /// An attribute set by name.
    pub fn set(&self, name: &str) -> Option<&AttrSet> {
        self.sets.get(name)
    }

    /// An enum or flags definition by name.
    pub fn enumeration(&self, name: &str) -> Option<&EnumDef> {
        self.enums.get(name)
    }

    /// A struct definition by name.
    pub fn structure(&self, name: &str) -> Option<&StructDef> {
        self.structs.get(name)
    }

    /// The formats of sub-message `name`.
    pub fn sub_message(&self, name: &str) -> Option<&[SubMessageFormat]> {
        self.sub_messages.get(name).map(Vec::as_slice)
    }

    /// The operation named `name`.
    pub fn op(&self, name: &str) -> Option<&Operation> {
        self.ops.iter().find(|o| o.name == name)
    }

    /// The operation whose replies or notifications carry command `cmd`.
    pub fn op_by_reply(&self, cmd: u8) -> Option<&Operation> {
        self.ops.iter().find(|o| o.reply_value == Some(cmd))
    }

    /// Size of the fixed header `name` (0 for none).
    pub fn struct_size(&self, name: Option<&str>) -> usize {
        name.and_then(|n| self.structs.get(n)).map_or(0, |s| s.size)
    }

    /// A spec of attribute sets only, no operations: how the SDK's table
    /// and typed codecs reach this encoder, so client input has one path to
    /// attributes whichever codec a plugin uses.
    pub(crate) fn from_sets(name: &str, sets: Vec<(String, Vec<AttrDef>)>) -> Self {
        let mut spec = Self {
            name: name.to_owned(),
            protocol: Protocol::Genetlink,
            ops: Vec::new(),
            mcast_groups: Vec::new(),
            enums: Table::default(),
            structs: Table::default(),
            sets: sets
                .into_iter()
                .map(|(n, attrs)| (n.clone(), AttrSet::new(n, attrs)))
                .collect(),
            sub_messages: FxHashMap::default(),
        };
        spec.link();
        spec
    }
}

impl Loader {
    fn structure(
        &self,
        d: &raw::Definition,
        done: &Table<StructDef>,
        enums: &Table<EnumDef>,
    ) -> Result<Option<StructDef>, SpecError> {
        let mut members = Vec::new();
        let mut size = 0usize;
        for m in &d.members {
            let place = format!("definitions.{}.{}", d.name, m.name);
            let kind = AttrKind::parse(&m.kind)
                .filter(|k| k.fixed_int().is_some() || matches!(k, AttrKind::Pad | AttrKind::Binary))
                .ok_or_else(|| self.err(&place, format!("'{}' cannot be a struct member", m.kind)))?;
            if let Some(e) = &m.enumeration
                && !enums.contains_key(e)
            {
                return Err(self.err(&place, format!("enum '{e}' is not defined")));
            }
            let len = match (kind.fixed_int(), &m.structure, &m.len) {
                (Some((n, _)), _, _) => n,
                (None, Some(s), _) => match done.get(s) {
                    Some(inner) => inner.size,
                    None => return Ok(None),
                },
                (None, None, Some(l)) => self.ranged(&place, l)?,
                (None, None, None) => return Err(self.err(&place, "a pad or binary member needs a len")),
            };
            size += len;
            members.push(MemberDef {
                name: m.name.clone(),
                kind,
                big_endian: self.byte_order(&place, m.byte_order.as_deref())?,
                enumeration: m.enumeration.clone(),
                enum_as_flags: m.enum_as_flags,
                len,
                display_hint: self.hint(&place, m.display_hint.as_deref())?,
                structure: m.structure.clone(),
            });
        }
        Ok(Some(StructDef {
            name: d.name.clone(),
            members,
            size,
        }))
    }

    fn byte_order(&self, place: &str, s: Option<&str>) -> Result<bool, SpecError> {
        match s {
            None | Some("host-endian" | "little-endian") => Ok(false),
            Some("big-endian") => Ok(true),
            Some(other) => Err(self.err(place, format!("byte-order '{other}' is unknown"))),
        }
    }

    fn hint(&self, place: &str, s: Option<&str>) -> Result<Option<DisplayHint>, SpecError> {
        s.map(|h| {
            DisplayHint::parse(h).ok_or_else(|| self.err(place, format!("display-hint '{h}' is unknown")))
        })
        .transpose()
    }

    fn attr_set(&self, s: &raw::AttrSet) -> Result<AttrSet, SpecError> {
        let mut attrs = Vec::with_capacity(s.attributes.len());
        let mut next: i128 = 1;
        for a in &s.attributes {
            let place = format!("attribute-sets.{}.{}", s.name, a.name);
            if let Some(v) = &a.value {
                next = self.num(&place, v)?;
            }
            let value = u16::try_from(next).ok().filter(|v| *v < 1 << 14).ok_or_else(|| {
                self.err(
                    &place,
                    format!("attribute number {next} does not fit netlink's 14 bits"),
                )
            })?;
            next += 1;
            let kind_text = a
                .kind
                .as_deref()
                .ok_or_else(|| self.err(&place, "an attribute needs a type"))?;
            let kind = AttrKind::parse(kind_text)
                .ok_or_else(|| self.err(&place, format!("type '{kind_text}' is unknown")))?;
            let sub_type = a
                .sub_type
                .as_deref()
                .map(|t| {
                    AttrKind::parse(t).ok_or_else(|| self.err(&place, format!("sub-type '{t}' is unknown")))
                })
                .transpose()?;
            let mut checks = Checks::default();
            if let Some(c) = &a.checks {
                let n = |v: &Option<NumOrName>| v.as_ref().map(|v| self.num(&place, v)).transpose();
                let len =
                    |v: &Option<NumOrName>| v.as_ref().map(|v| self.ranged::<usize>(&place, v)).transpose();
                checks = Checks {
                    min: n(&c.min)?,
                    max: n(&c.max)?,
                    min_len: len(&c.min_len)?,
                    max_len: len(&c.max_len)?,
                    exact_len: len(&c.exact_len)?,
                };
            }
            attrs.push(AttrDef {
                name: a.name.clone(),
                value,
                kind,
                big_endian: self.byte_order(&place, a.byte_order.as_deref())?,
                multi: a.multi_attr,
                nested: a.nested_attributes.clone(),
                enumeration: a.enumeration.clone(),
                enum_as_flags: a.enum_as_flags,
                display_hint: self.hint(&place, a.display_hint.as_deref())?,
                structure: a.structure.clone(),
                sub_type,
                checks,
                sub_message: a.sub_message.clone(),
                selector: a.selector.clone(),
                type_value: a.type_value.clone(),
            });
        }
        Ok(AttrSet::new(s.name.clone(), attrs))
    }

    fn cmd(&self, place: &str, v: i128) -> Result<u8, SpecError> {
        u8::try_from(v).map_err(|_| self.err(place, format!("command number {v} does not fit a u8")))
    }

    /// Number the operations as the kernel's nlspec does: `unified` gives
    /// request and reply one number; `directional` numbers them apart.
    fn operations(&self, o: &raw::Operations) -> Result<Vec<Operation>, SpecError> {
        let directional = match o.enum_model.as_deref() {
            None | Some("unified") => false,
            Some("directional") => true,
            Some(other) => return Err(self.err("operations.enum-model", format!("'{other}' is unknown"))),
        };
        let mut out = Vec::with_capacity(o.list.len());
        let (mut req, mut rsp): (i128, i128) = (1, 1);
        for op in &o.list {
            let place = format!("operations.{}", op.name);
            let mode = |m: &Option<raw::OpMode>| {
                m.as_ref().map(|m| OpMode {
                    request: m.request.as_ref().map(|r| r.attributes.clone()),
                    reply: m.reply.as_ref().map(|r| r.attributes.clone()),
                })
            };
            let is_notification = op.notify.is_some() || op.event.is_some();
            let (request_value, reply_value) = if !directional {
                if let Some(v) = &op.value {
                    req = self.num(&place, v)?;
                }
                let v = self.cmd(&place, req)?;
                req += 1;
                (Some(v), Some(v))
            } else if is_notification {
                if let Some(v) = &op.value {
                    rsp = self.num(&place, v)?;
                }
                let v = self.cmd(&place, rsp)?;
                rsp += 1;
                (None, Some(v))
            } else if let Some(m) = op.do_.as_ref().or(op.dump.as_ref()) {
                if let Some(v) = m.request.as_ref().and_then(|r| r.value.as_ref()) {
                    req = self.num(&place, v)?;
                }
                if let Some(v) = m.reply.as_ref().and_then(|r| r.value.as_ref()) {
                    rsp = self.num(&place, v)?;
                }
                let request = self.cmd(&place, req)?;
                req += 1;
                let reply = if m.reply.is_some() {
                    let v = self.cmd(&place, rsp)?;
                    rsp += 1;
                    Some(v)
                } else {
                    None
                };
                (Some(request), reply)
            } else {
                return Err(self.err(place, "a directional operation needs do, dump, notify or event"));
            };
            out.push(Operation {
                name: op.name.clone(),
                request_value,
                reply_value,
                attribute_set: op.attribute_set.clone(),
                fixed_header: op.fixed_header.clone().or_else(|| o.fixed_header.clone()),
                admin_perm: op.flags.iter().any(|f| f == "admin-perm"),
                do_: mode(&op.do_),
                dump: mode(&op.dump),
                notification: op
                    .event
                    .as_ref()
                    .map(|e| e.attributes.clone())
                    .or_else(|| op.notify.as_ref().map(|_| Vec::new())),
                mcgrp: op.mcgrp.clone(),
            });
        }
        // A `notify` op reuses the set and reply attributes of the op it names.
        for i in 0..out.len() {
            let Some(target) = o.list[i].notify.as_ref() else {
                continue;
            };
            let src = out.iter().find(|x| &x.name == target).ok_or_else(|| {
                self.err(
                    format!("operations.{}", out[i].name),
                    format!("notify '{target}' is not an operation"),
                )
            })?;
            let attrs = src
                .do_
                .as_ref()
                .and_then(|m| m.reply.clone())
                .or_else(|| src.dump.as_ref().and_then(|m| m.reply.clone()))
                .unwrap_or_default();
            let set = src.attribute_set.clone();
            let op = &mut out[i];
            op.notification = Some(attrs);
            if op.attribute_set.is_none() {
                op.attribute_set = set;
            }
        }
        Ok(out)
    }
}

fn guess_name(yaml: &str) -> String {
    yaml.lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map_or_else(|| "?".to_owned(), |n| n.trim().to_owned())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
