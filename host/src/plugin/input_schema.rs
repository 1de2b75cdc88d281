//! Checking a call's input against the operation's input schema (JSON
//! Schema 2020-12) before the plugin runs, so a client learns which field
//! is wrong from the gateway itself and a bad input costs the plugin
//! nothing.
//!
//! This is a small validator for the keywords the plugin SDK emits and a
//! hand-written plugin reasonably uses: `type`, `enum`, `const`,
//! `properties`, `patternProperties`, `additionalProperties`, `required`,
//! `items`, `minItems`, `maxItems`, `minimum`, `maximum`, `minLength`,
//! `maxLength`, `pattern`, `format` (`ipv4` and `ipv6` asserted), `anyOf`,
//! `allOf`, `oneOf` and `$ref` within the document. A schema using any other
//! assertion keyword is refused when the plugin loads: checking only part of
//! what a schema says would let through input the author meant to refuse.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;
use serde_json::{Map, Value};

/// Keywords that only annotate; they never refuse input.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
    "contentEncoding",
    "contentMediaType",
];

/// Keywords this validator asserts.
const ASSERTIONS: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "anyOf",
    "allOf",
    "oneOf",
    "$ref",
];

/// Most schema nodes one check may visit; input is bounded by the body
/// limit, this bounds what combinators multiply it into.
const MAX_STEPS: usize = 200_000;

/// Why a plugin's schema cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input schema at {place}: {message}")]
pub struct SchemaError {
    /// A JSON pointer into the schema.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

/// Why an input does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Refusal {
    /// The JSON path of the bad field, e.g. `$.header.dev-name`.
    pub path: String,
    /// What is wrong and what would be accepted.
    pub message: String,
    /// Only the value's JSON type was wrong (combinators prefer the
    /// branches that got further).
    type_only: bool,
}

fn refuse(path: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        path: path.to_owned(),
        message: message.into(),
        type_only: false,
    }
}

/// An operation's input schema, checked and with its patterns compiled.
#[derive(Debug)]
pub struct InputSchema {
    root: Value,
    patterns: HashMap<String, Regex>,
}

impl InputSchema {
    /// Parse and check a plugin's schema document.
    pub fn compile(text: &str) -> Result<Self, SchemaError> {
        let root: Value = serde_json::from_str(text).map_err(|e| SchemaError {
            place: "#".into(),
            message: format!("not JSON: {e}"),
        })?;
        let mut patterns = HashMap::new();
        scan(&root, &root, "#", &mut patterns)?;
        Ok(Self { root, patterns })
    }

    /// The schema document.
    pub fn document(&self) -> &Value {
        &self.root
    }

    /// Check `input`; the refusal names the first bad field.
    pub fn check(&self, input: &Value) -> Result<(), Refusal> {
        let mut steps = 0;
        self.node(&self.root, input, "$", &mut steps)
    }

    fn node(&self, schema: &Value, v: &Value, path: &str, steps: &mut usize) -> Result<(), Refusal> {
        *steps += 1;
        if *steps > MAX_STEPS {
            return Err(refuse(
                path,
                format!("the input is too complex to check against its schema (over {MAX_STEPS} steps)"),
            ));
        }
        let s = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Object(s) => s,
            _ => return Err(refuse(path, "not allowed here")),
        };
        if let Some(Value::String(r)) = s.get("$ref") {
            // Resolvable: checked at compile.
            if let Some(target) = resolve(&self.root, r) {
                self.node(target, v, path, steps)?;
            }
        }
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(t) => is_type(v, t),
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| is_type(v, t)),
                _ => true,
            };
            if !ok {
                let want = match t {
                    Value::Array(ts) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" or "),
                    t => t.as_str().unwrap_or_default().to_owned(),
                };
                return Err(Refusal {
                    path: path.to_owned(),
                    message: format!("expected {want}, got {}", type_name(v)),
                    type_only: true,
                });
            }
        }
        if let Some(Value::Array(options)) = s.get("enum")
            && !options.contains(v)
        {
            let mismatch = !options.iter().any(|o| type_name(o) == type_name(v));
            let names: Vec<String> = options.iter().map(short).collect();
            return Err(Refusal {
                path: path.to_owned(),
                message: format!("{} is not one of: {}", short(v), names.join(", ")),
                type_only: mismatch,
            });
        }
        if let Some(c) = s.get("const")
            && c != v
        {
            return Err(refuse(path, format!("must be {}", short(c))));
        }
        match v {
            Value::Number(_) => self.number(s, v, path)?,
            Value::String(text) => self.string(s, text, path)?,
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                    && n < min
                {
                    return Err(refuse(path, format!("{n} items; at least {min} are needed")));
                }
                if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                    && n > max
                {
                    return Err(refuse(path, format!("{n} items; at most {max} are allowed")));
                }
                if let Some(item) = s.get("items") {
                    for (i, x) in items.iter().enumerate() {
                        self.node(item, x, &format!("{path}[{i}]"), steps)?;
                    }
                }
            }
            Value::Object(o) => self.object(s, o, path, steps)?,
            _ => {}
        }
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                self.node(sub, v, path, steps)?;
            }
        }
        if let Some(Value::Array(any)) = s.get("anyOf") {
            let mut failures = Vec::new();
            for sub in any {
                match self.node(sub, v, path, steps) {
                    Ok(()) => {
                        failures.clear();
                        break;
                    }
                    Err(e) => failures.push(e),
                }
            }
            if !failures.is_empty() {
                return Err(best(failures, path));
            }
        }
        if let Some(Value::Array(one)) = s.get("oneOf") {
            let mut failures = Vec::new();
            let mut passed = 0;
            for sub in one {
                match self.node(sub, v, path, steps) {
                    Ok(()) => passed += 1,
                    Err(e) => failures.push(e),
                }
            }
            match passed {
                1 => {}
                0 => return Err(best(failures, path)),
                n => {
                    return Err(refuse(
                        path,
                        format!("matches {n} of the accepted forms; exactly one is allowed"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn number(&self, s: &Map<String, Value>, v: &Value, path: &str) -> Result<(), Refusal> {
        let range = |bound: &str| s.get(bound).filter(|b| b.is_number());
        if let Some(min) = range("minimum")
            && cmp(v, min).is_lt()
        {
            return Err(refuse(path, format!("{v} is below the minimum {min}")));
        }
        if let Some(max) = range("maximum")
            && cmp(v, max).is_gt()
        {
            return Err(refuse(path, format!("{v} is above the maximum {max}")));
        }
        Ok(())
    }

    fn string(&self, s: &Map<String, Value>, text: &str, path: &str) -> Result<(), Refusal> {
        let n = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && n < min
        {
            return Err(refuse(path, format!("{n} characters; at least {min} are needed")));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && n > max
        {
            return Err(refuse(path, format!("{n} characters; at most {max} are allowed")));
        }
        if let Some(Value::String(p)) = s.get("pattern")
            && let Some(re) = self.patterns.get(p)
            && !re.is_match(text)
        {
            return Err(refuse(
                path,
                format!("{} does not match the pattern {p}", short(&text.into())),
            ));
        }
        match s.get("format").and_then(Value::as_str) {
            Some("ipv4") if text.parse::<Ipv4Addr>().is_err() => {
                Err(refuse(path, "expected an IPv4 address"))
            }
            Some("ipv6") if text.parse::<Ipv6Addr>().is_err() => {
                Err(refuse(path, "expected an IPv6 address"))
            }
            _ => Ok(()),
        }
    }

    fn object(
        &self,
        s: &Map<String, Value>,
        o: &Map<String, Value>,
        path: &str,
        steps: &mut usize,
    ) -> Result<(), Refusal> {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = s.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !o.contains_key(r) {
                    return Err(refuse(&format!("{path}.{r}"), "missing"));
                }
            }
        }
        let pattern_props = s.get("patternProperties").and_then(Value::as_object);
        for (key, value) in o {
            let here = format!("{path}.{key}");
            let mut matched = false;
            if let Some(sub) = props.and_then(|p| p.get(key)) {
                matched = true;
                self.node(sub, value, &here, steps)?;
            }
            for (p, sub) in pattern_props.into_iter().flatten() {
                if self.patterns.get(p).is_some_and(|re| re.is_match(key)) {
                    matched = true;
                    self.node(sub, value, &here, steps)?;
                }
            }
            match s.get("additionalProperties") {
                Some(Value::Bool(false)) if !matched => {
                    let names: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let accepted = if names.is_empty() {
                        "it takes no keys".to_owned()
                    } else {
                        format!("accepted: {}", names.join(", "))
                    };
                    return Err(refuse(&here, format!("unknown key; {accepted}")));
                }
                Some(sub) if !matched => self.node(sub, value, &here, steps)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The most useful of several failed alternatives: the one that got
/// deepest into the input, else one whose type fit, else all the expected
/// types together.
fn best(mut failures: Vec<Refusal>, path: &str) -> Refusal {
    failures.sort_by_key(|f| std::cmp::Reverse(f.path.len()));
    let deepest = failures[0].path.len();
    if deepest > path.len() {
        return failures.swap_remove(0);
    }
    if let Some(i) = failures.iter().position(|f| !f.type_only) {
        return failures.swap_remove(i);
    }
    let wants: Vec<&str> = failures
        .iter()
        .map(|f| f.message.split(", got").next().unwrap_or(&f.message))
        .collect();
    Refusal {
        path: path.to_owned(),
        message: wants.join("; or "),
        type_only: true,
    }
}

fn cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
    let int = |v: &Value| v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from));
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
        }
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value for a message: short, one line.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        let cut = (0..=61).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// The schema node a `$ref` within the document names (`#` or `#/a/b`).
fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let pointer = r.strip_prefix('#')?;
    root.pointer(pointer)
}

/// Check every node's keywords once, compile patterns, resolve refs.
fn scan(
    root: &Value,
    node: &Value,
    place: &str,
    patterns: &mut HashMap<String, Regex>,
) -> Result<(), SchemaError> {
    let bad = |message: String| SchemaError {
        place: place.to_owned(),
        message,
    };
    let s = match node {
        Value::Bool(_) => return Ok(()),
        Value::Object(s) => s,
        _ => return Err(bad("a schema must be an object or a boolean".into())),
    };
    let compile = |p: &str, patterns: &mut HashMap<String, Regex>| -> Result<(), SchemaError> {
        if !patterns.contains_key(p) {
            let re = regex::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| bad(format!("pattern {p:?} does not compile: {e}")))?;
            patterns.insert(p.to_owned(), re);
        }
        Ok(())
    };
    for (k, v) in s {
        if !ASSERTIONS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
            return Err(bad(format!(
                "keyword '{k}' is not one the gateway checks ({}); describe the input with those, or leave the schema out",
                ASSERTIONS.join(", ")
            )));
        }
        let here = format!("{place}/{k}");
        match (k.as_str(), v) {
            ("$ref", Value::String(r)) if resolve(root, r).is_none() => {
                return Err(bad(format!("$ref {r:?} does not name a place in this document")));
            }
            ("$ref", Value::String(_)) => {}
            ("$ref", _) => return Err(bad("$ref must be a string".into())),
            ("pattern", Value::String(p)) => compile(p, patterns)?,
            ("properties" | "$defs", Value::Object(m)) => {
                for (name, sub) in m {
                    scan(root, sub, &format!("{here}/{name}"), patterns)?;
                }
            }
            ("patternProperties", Value::Object(m)) => {
                for (p, sub) in m {
                    compile(p, patterns)?;
                    scan(root, sub, &format!("{here}/{p}"), patterns)?;
                }
            }
            ("additionalProperties" | "items", sub) => scan(root, sub, &here, patterns)?,
            ("anyOf" | "allOf" | "oneOf", Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    scan(root, sub, &format!("{here}/{i}"), patterns)?;
                }
            }
            ("anyOf" | "allOf" | "oneOf", _) => return Err(bad(format!("{k} must be an array"))),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> InputSchema {
        InputSchema::compile(&v.to_string()).unwrap()
    }

    #[test]
    fn refusals_name_the_field() {
        let s = schema(json!({
            "type": "object",
            "properties": {
                "header": {"$ref": "#/$defs/h"},
                "n": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, {"enum": ["a", "b"]}]},
            },
            "additionalProperties": false,
            "$defs": {"h": {"type": "object", "properties": {"dev-name": {"type": "string", "maxLength": 15}}, "additionalProperties": false}},
        }));
        assert!(
            s.check(&json!({"header": {"dev-name": "ifb0"}, "n": "a"}))
                .is_ok()
        );
        let e = s
            .check(&json!({"header": {"dev-name": "x".repeat(16)}}))
            .unwrap_err();
        assert_eq!(e.path, "$.header.dev-name");
        let e = s.check(&json!({"header": {"bogus": 1}})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("$.header.bogus", "unknown key; accepted: dev-name")
        );
        let e = s.check(&json!({"n": 256})).unwrap_err();
        assert_eq!(e.path, "$.n");
        assert!(e.message.contains("maximum 255"), "{e}");
        let e = s.check(&json!({"n": "c"})).unwrap_err();
        assert!(e.message.contains("not one of: \"a\", \"b\""), "{e}");
    }

    #[test]
    fn schemas_with_keywords_it_cannot_check_are_refused() {
        let e = InputSchema::compile(&json!({"not": {"type": "string"}}).to_string()).unwrap_err();
        assert!(e.message.contains("keyword 'not'"), "{e}");
        let e = InputSchema::compile(&json!({"$ref": "#/$defs/none"}).to_string()).unwrap_err();
        assert!(e.message.contains("does not name"), "{e}");
    }

    #[test]
    fn the_sdk_hex_pattern_accepts_what_the_encoder_reads() {
        let s = schema(json!({"type": "string", "pattern": genl_plugin_sdk::ynl::schema::HEX_PATTERN}));
        for ok in ["", "0a", "0a1B", "0a:1b", "0a-1b", "0a 1b"] {
            assert!(s.check(&json!(ok)).is_ok(), "{ok}");
        }
        for bad in ["0", "0a1", "zz", "0x0a"] {
            assert!(s.check(&json!(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bundled_specs_input_schemas_compile_and_take_no_input() {
        // A schema this validator refused would keep the ynl plugin from
        // loading for that family.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ynl-specs");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let spec = genl_plugin_sdk::ynl::Spec::load(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for op in genl_plugin_sdk::ynl::Service::new(spec).describe().ops {
                let text = op.input_schema.expect("the engine describes every op");
                let schema = InputSchema::compile(&text)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", path.display(), op.name));
                assert!(
                    schema.check(&Value::Null).is_ok(),
                    "{} {}",
                    path.display(),
                    op.name
                );
                let output = op.output_schema.expect("output schema");
                serde_json::from_str::<Value>(&output).unwrap();
                checked += 1;
            }
        }
        assert!(checked > 200, "only {checked} ops");
    }

    #[test]
    fn what_the_engine_encodes_its_schema_accepts() {
        use genl_plugin_sdk::ynl::{Service, Spec};
        let load = |name: &str| {
            let path =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../ynl-specs/{name}.yaml"));
            Service::new(Spec::load(&std::fs::read_to_string(path).unwrap()).unwrap())
        };
        for (spec, op, input) in [
            ("netdev", "dev-get", json!({"ifindex": 1})),
            (
                "ethtool",
                "channels-get",
                json!({"header": {"dev-name": "ifb0", "flags": ["omit-reply", "stats"]}}),
            ),
            (
                "ethtool",
                "channels-get",
                json!({"header": {"dev-index": 2, "flags": "stats"}}),
            ),
            ("ethtool", "channels-get", json!({"header": {"flags": 4}})),
            (
                "ethtool",
                "channels-set",
                json!({"header": {"dev-name": "a"}, "rx-count": 4, "combined-count": 1}),
            ),
            (
                "ethtool",
                "features-set",
                json!({"header": {"dev-name": "a"}, "wanted": {"bits": {"bit": [{"name": "rx-gro", "value": true}]}}}),
            ),
            (
                "tcp_metrics",
                "del",
                json!({"addr-ipv4": "10.0.0.1", "saddr-ipv4": "10.0.0.2"}),
            ),
            (
                "mptcp_pm",
                "add-addr",
                json!({"addr": {"family": 2, "addr4": 167_772_161, "port": 1000, "flags": 1}}),
            ),
        ] {
            let svc = load(spec);
            let op = svc.client_op(op).unwrap_or_else(|| panic!("{spec} has no {op}"));
            svc.encode(&op, &input)
                .unwrap_or_else(|e| panic!("{spec} {}: the engine refuses {input}: {}", op.name, e.message));
            let desc = svc.describe();
            let text = desc
                .ops
                .iter()
                .find(|o| o.name == op.name)
                .and_then(|o| o.input_schema.clone())
                .unwrap();
            InputSchema::compile(&text)
                .unwrap()
                .check(&input)
                .unwrap_or_else(|e| panic!("{spec} {}: the schema refuses {input}: {e}", op.name));
        }
    }
}
