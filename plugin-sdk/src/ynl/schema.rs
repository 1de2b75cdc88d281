//! JSON Schema (2020-12) of each client operation's input and output,
//! derived from the spec: what [`Spec::encode_request`] accepts and what
//! the decoder produces, so clients (and the host, which checks input
//! before the plugin runs) know an operation's fields without reading the
//! YAML.
//!
//! Nested attribute sets and structs are `$defs` referenced with `$ref`
//! (`#/$defs/set-NAME`, `#/$defs/struct-NAME`): specs nest sets inside
//! themselves, so inlining would not end.
//!
//! The input schema is closed (`additionalProperties: false`) exactly where
//! the encoder refuses unknown keys; integer ranges combine the type's size
//! with the spec's `checks`; strings carry `maxLength` from `checks`; enums
//! take a name or a number, flags a name, a list of names or a number;
//! bytes are text per the display hint or hex ([`HEX_PATTERN`]). It never
//! refuses what the encoder accepts: the host enforces it before the plugin
//! runs. The output schema describes the decoder's shapes and
//! stays open, since a newer kernel may add attributes (`attr-N`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::service::{ClientOp, Mode};
use super::spec::{AttrDef, AttrKind, AttrSet, Checks, DisplayHint, MemberDef, Spec};

/// The JSON Schema dialect the schemas declare.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Hex bytes as the encoder reads them: pairs of hex digits, with `:`, `-`
/// or spaces anywhere between digits.
pub const HEX_PATTERN: &str = "^[:\\- ]*([0-9a-fA-F][:\\- ]*[0-9a-fA-F][:\\- ]*)*$";

/// Which way a schema describes data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to kernel: closed objects, checks applied.
    Input,
    /// Kernel to client: open objects, decoder shapes.
    Output,
}

/// Builds one schema document; collects the `$defs` it references.
struct Builder<'a> {
    spec: &'a Spec,
    dir: Dir,
    defs: Map<String, Value>,
    /// Defs referenced but not yet built (sets first, then structs).
    pending_sets: Vec<String>,
    pending_structs: Vec<String>,
    seen: BTreeSet<String>,
}

fn num(n: i128) -> Value {
    if n >= 0 {
        u64::try_from(n).map_or(Value::from(u64::MAX), Value::from)
    } else {
        i64::try_from(n).map_or(Value::from(i64::MIN), Value::from)
    }
}

fn int_bounds(kind: AttrKind, size: Option<usize>) -> (i128, i128) {
    let (size, signed) = match kind {
        AttrKind::Uint => (8, false),
        AttrKind::Sint => (8, true),
        k => k.fixed_int().unwrap_or((size.unwrap_or(8).min(8), false)),
    };
    let bits = 8 * size as u32;
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

impl<'a> Builder<'a> {
    fn new(spec: &'a Spec, dir: Dir) -> Self {
        Self {
            spec,
            dir,
            defs: Map::new(),
            pending_sets: Vec::new(),
            pending_structs: Vec::new(),
            seen: BTreeSet::new(),
        }
    }

    fn set_ref(&mut self, name: &str) -> Value {
        let key = format!("set-{name}");
        if self.seen.insert(key.clone()) {
            self.pending_sets.push(name.to_owned());
        }
        json!({"$ref": format!("#/$defs/{key}")})
    }

    fn struct_ref(&mut self, name: &str) -> Value {
        let key = format!("struct-{name}");
        if self.seen.insert(key.clone()) {
            self.pending_structs.push(name.to_owned());
        }
        json!({"$ref": format!("#/$defs/{key}")})
    }

    /// Build every def referenced so far (and those they reference).
    fn drain(&mut self) {
        loop {
            if let Some(name) = self.pending_sets.pop() {
                let v = match self.spec.set(&name) {
                    Some(set) => self.set_object(set),
                    None => json!({"type": "object"}),
                };
                self.defs.insert(format!("set-{name}"), v);
            } else if let Some(name) = self.pending_structs.pop() {
                let v = self.struct_object(&name);
                self.defs.insert(format!("struct-{name}"), v);
            } else {
                return;
            }
        }
    }

    /// A whole set: every attribute that can be sent (input) or shown.
    fn set_object(&mut self, set: &AttrSet) -> Value {
        let mut props = Map::new();
        for def in set
            .attrs
            .iter()
            .filter(|d| !matches!(d.kind, AttrKind::Pad | AttrKind::Unused))
        {
            let s = self.attr(def);
            props.insert(def.name.clone(), s);
        }
        self.object(props)
    }

    fn object(&self, props: Map<String, Value>) -> Value {
        let mut o = json!({"type": "object", "properties": props});
        match self.dir {
            Dir::Input => o["additionalProperties"] = Value::Bool(false),
            Dir::Output => {
                // A newer kernel's attributes the spec does not know.
                o["patternProperties"] = json!({"^attr-[0-9]+$": {"type": "string"}});
            }
        }
        o
    }

    /// The members of struct `name` as properties (pad members are never
    /// shown).
    fn struct_props(&mut self, name: &str) -> Map<String, Value> {
        let members: Vec<MemberDef> = self
            .spec
            .structure(name)
            .map(|s| s.members.clone())
            .unwrap_or_default();
        let mut props = Map::new();
        for m in members.iter().filter(|m| m.kind != AttrKind::Pad) {
            let s = self.member(m);
            props.insert(m.name.clone(), s);
        }
        props
    }

    fn struct_object(&mut self, name: &str) -> Value {
        let props = self.struct_props(name);
        let mut o = json!({"type": "object", "properties": props});
        if self.dir == Dir::Input {
            o["additionalProperties"] = Value::Bool(false);
        }
        o
    }

    fn member(&mut self, m: &MemberDef) -> Value {
        match m.kind {
            AttrKind::Binary => match &m.structure {
                Some(s) => self.struct_ref(s),
                None => self.bytes(m.display_hint, &Checks::default()),
            },
            k => {
                let (lo, hi) = int_bounds(k, Some(m.len));
                self.int(
                    m.enumeration.as_deref(),
                    m.enum_as_flags,
                    m.display_hint,
                    k,
                    (lo, hi),
                )
            }
        }
    }

    fn attr(&mut self, def: &AttrDef) -> Value {
        let one = self.attr_one(def);
        if !def.multi {
            return one;
        }
        match self.dir {
            // The encoder takes one value or an array of them.
            Dir::Input => json!({"anyOf": [one.clone(), {"type": "array", "items": one}]}),
            Dir::Output => json!({"type": "array", "items": one}),
        }
    }

    fn attr_one(&mut self, def: &AttrDef) -> Value {
        let c = &def.checks;
        match def.kind {
            AttrKind::Flag => match self.dir {
                // The encoder takes null as "absent", like false.
                Dir::Input => json!({"type": ["boolean", "null"]}),
                Dir::Output => json!({"const": true}),
            },
            AttrKind::String => {
                let mut s = json!({"type": "string"});
                if self.dir == Dir::Input {
                    // The encoder counts bytes, JSON Schema characters; a
                    // character is at least a byte, so `maxLength` never
                    // refuses what the encoder takes (a `minLength` could,
                    // so the encoder alone checks minimums).
                    if let Some(n) = c.max_len.or(c.exact_len) {
                        s["maxLength"] = n.into();
                    }
                }
                s
            }
            k if k.is_int() => {
                let (mut lo, mut hi) = int_bounds(k, None);
                if self.dir == Dir::Input {
                    lo = c.min.map_or(lo, |m| m.max(lo));
                    hi = c.max.map_or(hi, |m| m.min(hi));
                }
                self.int(
                    def.enumeration.as_deref(),
                    def.enum_as_flags,
                    def.display_hint,
                    k,
                    (lo, hi),
                )
            }
            AttrKind::Binary => {
                if let Some(s) = &def.structure {
                    self.struct_ref(s)
                } else if let Some(t) = def.sub_type.filter(|t| t.fixed_int().is_some()) {
                    let (lo, hi) = int_bounds(t, None);
                    json!({"type": "array", "items": {"type": "integer", "minimum": num(lo), "maximum": num(hi)}})
                } else {
                    self.bytes(def.display_hint, c)
                }
            }
            AttrKind::Nest => match def.nested.as_deref() {
                Some(n) => self.set_ref(n),
                None => json!({"type": "object"}),
            },
            AttrKind::IndexedArray => {
                let item = match def.sub_type {
                    Some(AttrKind::Nest) => match def.nested.as_deref() {
                        Some(n) => self.set_ref(n),
                        None => json!({"type": "object"}),
                    },
                    Some(t) if t.fixed_int().is_some() => {
                        let (lo, hi) = int_bounds(t, None);
                        self.int(None, false, def.display_hint, t, (lo, hi))
                    }
                    _ => self.bytes(def.display_hint, &Checks::default()),
                };
                json!({"type": "array", "items": item})
            }
            AttrKind::Bitfield32 => {
                let e = def.enumeration.as_deref();
                let part = self.int(e, def.enum_as_flags, None, AttrKind::U32, (0, u32::MAX.into()));
                let mut o = json!({
                    "type": "object",
                    "properties": {"value": part.clone(), "selector": part},
                });
                if self.dir == Dir::Input {
                    o["required"] = json!(["value", "selector"]);
                    o["additionalProperties"] = Value::Bool(false);
                }
                o
            }
            AttrKind::NestTypeValue => {
                let mut props = Map::new();
                for name in &def.type_value {
                    props.insert(
                        name.clone(),
                        json!({"type": "integer", "minimum": 0, "maximum": 65535}),
                    );
                }
                let mut o = json!({"type": "object", "properties": props});
                if let Some(n) = def.nested.as_deref() {
                    // The set's attributes sit beside the levels; the
                    // encoder checks them against the set.
                    o["description"] = format!(
                        "the '{}' levels, then attributes of set '{n}'",
                        def.type_value.join("', '")
                    )
                    .into();
                }
                if self.dir == Dir::Input {
                    o["required"] = def.type_value.clone().into();
                }
                o
            }
            AttrKind::SubMessage => json!({
                "type": "object",
                "description": format!(
                    "format chosen by the value of '{}' (sub-message '{}')",
                    def.selector.as_deref().unwrap_or("?"),
                    def.sub_message.as_deref().unwrap_or("?")
                ),
            }),
            _ => json!({"type": "string"}),
        }
    }

    /// An integer, its enum's names, or a display-hint text.
    fn int(
        &self,
        enumeration: Option<&str>,
        as_flags: bool,
        hint: Option<DisplayHint>,
        kind: AttrKind,
        (lo, hi): (i128, i128),
    ) -> Value {
        let number = json!({"type": "integer", "minimum": num(lo), "maximum": num(hi)});
        let e = enumeration.and_then(|e| self.spec.enumeration(e));
        let ipv4 = hint == Some(DisplayHint::Ipv4) && kind.fixed_int().is_some_and(|(s, _)| s == 4);
        match (self.dir, e) {
            (Dir::Input, Some(e)) => {
                let names: Vec<&str> = e.entries.iter().map(|(n, _)| n.as_str()).collect();
                if e.flags || as_flags {
                    json!({"anyOf": [
                        number,
                        {"enum": names},
                        {"type": "array", "items": {"enum": names}},
                    ], "description": format!("flags of {}: a name, a list of names or the mask", e.name)})
                } else {
                    json!({"anyOf": [number, {"enum": names}], "description": format!("one of {} by name or number", e.name)})
                }
            }
            (Dir::Output, Some(e)) => {
                let names: Vec<&str> = e.entries.iter().map(|(n, _)| n.as_str()).collect();
                let named = json!({"anyOf": [{"enum": names}, {"type": "integer"}]});
                if e.flags || as_flags {
                    json!({"type": "array", "items": named})
                } else {
                    named
                }
            }
            (Dir::Input, None) if ipv4 => json!({"anyOf": [number, {"type": "string", "format": "ipv4"}]}),
            (Dir::Output, None) if ipv4 => json!({"type": "string", "format": "ipv4"}),
            (Dir::Output, None) if hint == Some(DisplayHint::Hex) => json!({"type": "string"}),
            _ => number,
        }
    }

    /// Bytes: text for IP hints, hex otherwise.
    fn bytes(&self, hint: Option<DisplayHint>, c: &Checks) -> Value {
        let mut s = match hint {
            Some(DisplayHint::Ipv4) => json!({"type": "string", "format": "ipv4"}),
            Some(DisplayHint::Ipv6) => json!({"type": "string", "format": "ipv6"}),
            Some(DisplayHint::Ipv4OrV6) => {
                json!({"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]})
            }
            _ => match self.dir {
                Dir::Input => json!({"type": "string", "pattern": HEX_PATTERN}),
                Dir::Output => json!({"type": "string"}),
            },
        };
        if self.dir == Dir::Input {
            let len = match (c.exact_len, c.min_len, c.max_len) {
                (Some(x), _, _) => Some(format!("exactly {x} bytes")),
                (None, Some(a), Some(b)) => Some(format!("{a} to {b} bytes")),
                (None, Some(a), None) => Some(format!("at least {a} bytes")),
                (None, None, Some(b)) => Some(format!("at most {b} bytes")),
                (None, None, None) => None,
            };
            if let Some(len) = len {
                s["description"] = len.into();
            }
        }
        s
    }

    /// Wrap `body` as a document with the collected `$defs`.
    fn finish(mut self, title: String, body: Value) -> Value {
        self.drain();
        let mut doc = json!({"$schema": DIALECT, "title": title});
        if let (Value::Object(d), Value::Object(b)) = (&mut doc, body) {
            d.extend(b);
        }
        if !self.defs.is_empty() {
            doc["$defs"] = Value::Object(self.defs);
        }
        doc
    }
}

impl Spec {
    /// The schema of what `op` accepts: an object with the operation's
    /// request attributes (and fixed-header members), or null.
    pub fn input_schema(&self, op: &ClientOp<'_>) -> Value {
        let mut b = Builder::new(self, Dir::Input);
        let mut props = match op.op.fixed_header.as_deref() {
            Some(h) => b.struct_props(h),
            None => Map::new(),
        };
        if let Some(set) = op.op.attribute_set.as_deref().and_then(|s| self.set(s)) {
            for name in op.request_attrs() {
                if let Some(def) = set.by_name(name) {
                    let s = b.attr(def);
                    props.insert(name.clone(), s);
                }
            }
        }
        let mut body = b.object(props);
        body["type"] = json!(["object", "null"]);
        let title = format!("{} {} input", self.name, op.name);
        b.finish(title, body)
    }

    /// The schema of what `op` answers: one reply object (do), a list of
    /// them (dump), or null for a do that only acknowledges.
    pub fn output_schema(&self, op: &ClientOp<'_>) -> Value {
        let mut b = Builder::new(self, Dir::Output);
        let mode = match op.mode {
            Mode::Do => op.op.do_.as_ref(),
            Mode::Dump => op.op.dump.as_ref(),
        };
        let reply = mode.and_then(|m| m.reply.as_deref());
        let mut props = match op.op.fixed_header.as_deref() {
            Some(h) => b.struct_props(h),
            None => Map::new(),
        };
        if let Some(set) = op.op.attribute_set.as_deref().and_then(|s| self.set(s)) {
            for name in reply.unwrap_or_default() {
                if let Some(def) = set.by_name(name) {
                    let s = b.attr(def);
                    props.insert(name.clone(), s);
                }
            }
        }
        let one = b.object(props);
        let body = match (op.mode, reply) {
            (Mode::Dump, _) => json!({"type": "array", "items": one}),
            (Mode::Do, Some(_)) => one,
            // No reply documented: the kernel only acknowledges.
            (Mode::Do, None) => json!({"anyOf": [{"type": "null"}, one]}),
        };
        let title = format!("{} {} output", self.name, op.name);
        b.finish(title, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ynl::Service;

    #[test]
    fn nested_sets_are_defs_and_every_ref_resolves() {
        let dir = format!("{}/../ynl-specs", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        assert!(files.len() > 20, "the bundled specs are missing from {dir}");
        for path in files {
            let file = path.display();
            let spec = Spec::load(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let svc = Service::new(spec);
            for op in svc.client_ops() {
                for doc in [svc.spec().input_schema(&op), svc.spec().output_schema(&op)] {
                    let text = doc.to_string();
                    for r in text.split("\"#/$defs/").skip(1) {
                        let key = &r[..r.find('"').unwrap()];
                        assert!(
                            doc["$defs"].get(key).is_some(),
                            "{file} {}: dangling {key}",
                            op.name
                        );
                    }
                }
            }
        }
    }
}
