//! The one way client JSON becomes attributes. The table codec
//! ([`crate::schema`]) and the typed codec ([`crate::typed`]) describe their
//! sets here, and the YNL engine's encoder ([`crate::ynl::Spec`]) writes the
//! bytes: every key must be a declared attribute (otherwise a `bad-input`
//! naming the key and listing the accepted ones), every value must fit its
//! type, and each refusal names the JSON path (`$.header.dev-name`). No key
//! of the input becomes a raw, undescribed attribute.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::Value;

use crate::ynl::{AttrDef, AttrKind, Checks, DisplayHint, EncodeError, Spec};

/// How one attribute is given in client JSON: its wire type, byte order,
/// display and nested set. Built by [`crate::typed::AttrValue::input`].
#[derive(Debug, Clone)]
pub struct InputDef(pub(crate) AttrDef);

impl InputDef {
    fn of(kind: AttrKind) -> Self {
        InputDef(AttrDef {
            name: String::new(),
            value: 0,
            kind,
            big_endian: false,
            multi: false,
            nested: None,
            enumeration: None,
            enum_as_flags: false,
            display_hint: None,
            structure: None,
            sub_type: None,
            checks: Checks::default(),
            sub_message: None,
            selector: None,
            type_value: Vec::new(),
        })
    }

    /// A fixed-size or variable integer, string, flag, bytes or bitfield.
    pub fn kind(kind: AttrKind) -> Self {
        Self::of(kind)
    }

    /// An integer in network byte order.
    pub fn big_endian(kind: AttrKind) -> Self {
        let mut d = Self::of(kind);
        d.0.big_endian = true;
        d
    }

    /// An address (IPv4 as a big-endian u32, IPv6 as 16 bytes) given as text.
    pub fn address(v6: bool) -> Self {
        let mut d = if v6 {
            Self::of(AttrKind::Binary)
        } else {
            Self::big_endian(AttrKind::U32)
        };
        d.0.display_hint = Some(if v6 { DisplayHint::Ipv6 } else { DisplayHint::Ipv4 });
        d
    }

    /// A nested set registered with [`InputSpec::set`].
    pub fn nest(set: String) -> Self {
        let mut d = Self::of(AttrKind::Nest);
        d.0.nested = Some(set);
        d
    }

    /// An array of nested sets, one attribute per entry.
    pub fn nested_array(set: String) -> Self {
        let mut d = Self::of(AttrKind::IndexedArray);
        d.0.sub_type = Some(AttrKind::Nest);
        d.0.nested = Some(set);
        d
    }

    /// The attribute may repeat: a JSON array is one attribute per item.
    pub fn repeated(mut self) -> Self {
        self.0.multi = true;
        self
    }

    /// Not accepted from input at all (a type that does not say how it is
    /// written as JSON).
    pub fn refused() -> Self {
        Self::of(AttrKind::Unused)
    }
}

/// The attribute sets one codec declares, collected for the encoder.
#[derive(Debug, Default)]
pub struct InputSpec {
    sets: Vec<(String, Vec<AttrDef>)>,
    started: HashSet<String>,
}

impl InputSpec {
    /// Register set `key` built by `attrs` (once: a set named again, or
    /// reached again through itself, is not rebuilt). Returns its name.
    pub fn set(
        &mut self,
        key: &str,
        attrs: impl FnOnce(&mut Self) -> Vec<(u16, String, InputDef)>,
    ) -> String {
        if self.started.insert(key.to_owned()) {
            let defs = attrs(self)
                .into_iter()
                .map(|(value, name, InputDef(mut def))| {
                    def.value = value;
                    def.name = name;
                    def
                })
                .collect();
            self.sets.push((key.to_owned(), defs));
        }
        key.to_owned()
    }
}

/// The JSON key of a Rust field name: kebab-case, as the kernel's specs and
/// the typed codec's serialisation spell it.
pub fn json_name(field: &str) -> String {
    field.trim_start_matches("r#").replace('_', "-")
}

/// Specs built per declared set are kept per thread; declared sets are
/// static (types, `const` tables), so this only guards against a codec
/// handed ever-new tables.
const MAX_CACHED: usize = 256;

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<Spec>>> = RefCell::new(HashMap::new());
}

/// Encode `input` as the attributes of the set `key` that `build` declares;
/// the spec is built once per `key`, which must name one declaration for
/// the life of the thread (a type name).
pub(crate) fn encode_cached(
    key: &str,
    build: impl FnOnce(&mut InputSpec) -> String,
    input: &Value,
) -> Result<Vec<u8>, EncodeError> {
    let spec = CACHE.with(|c| c.borrow().get(key).cloned());
    let spec = match spec {
        Some(s) => s,
        None => {
            let s = Rc::new(build_spec(build));
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= MAX_CACHED {
                    c.clear();
                }
                c.insert(key.to_owned(), s.clone());
            });
            s
        }
    };
    encode_with(&spec, key, input)
}

/// [`encode_cached`] for declarations without a lasting name (a table
/// built at run time): the spec is built for this input only.
pub(crate) fn encode_once(
    key: &str,
    build: impl FnOnce(&mut InputSpec) -> String,
    input: &Value,
) -> Result<Vec<u8>, EncodeError> {
    encode_with(&build_spec(build), key, input)
}

fn build_spec(build: impl FnOnce(&mut InputSpec) -> String) -> Spec {
    let mut b = InputSpec::default();
    build(&mut b);
    Spec::from_sets("input", b.sets)
}

fn encode_with(spec: &Spec, key: &str, input: &Value) -> Result<Vec<u8>, EncodeError> {
    let set = spec.set(key).ok_or_else(|| EncodeError {
        path: "$".into(),
        message: format!("no attribute set '{key}' was declared"),
    })?;
    let allowed: Vec<String> = set
        .attrs
        .iter()
        .filter(|d| d.kind != AttrKind::Unused)
        .map(|d| d.name.clone())
        .collect();
    spec.encode_request(key, &allowed, None, input)
}
