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
use std::sync::Arc;

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

/// Most bytes of strings (and keys matched against patterns) one check may
/// read, counting each time a schema reads them. Branches multiply reads:
/// a probe's schema of five nested `anyOf`s of ten branches each matched a
/// 1 MiB string 100,000 times, and two such requests held both cores for
/// 30 s. The body limit is 1 MiB by default, so this reads it 16 times.
const MAX_READ_BYTES: usize = 16 << 20;

/// Deepest a check may recurse: one level for each nesting of the input
/// (at most 128, serde_json's limit) and for each `$ref` or combinator
/// followed on one value. The check runs on an async worker's stack, so a
/// schema that recursed without end (a `$ref` cycle through no property)
/// would have aborted the whole gateway.
const MAX_CHECK_DEPTH: usize = 256;

/// Longest chain of `$ref`s and combinators one value may be checked
/// through (`{"$ref": "#/$defs/a"}` to `a`'s `anyOf` to ...). Chains in real
/// schemas are a few links long; a cycle is infinitely long.
const MAX_SAME_VALUE_CHAIN: usize = 32;

/// Most distinct `pattern`s and `patternProperties` keys in all of one
/// plugin's input schemas, and the compiled size each may take. Patterns
/// are compiled into the host's memory, outside the plugin's budget: each
/// a 1 MiB limit alone let 5,000 of them take 4.3 GB at load.
pub const MAX_PATTERNS: usize = 256;
const PATTERN_SIZE_LIMIT: usize = 64 << 10;

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

/// What one check has spent: schema nodes visited, and how deep it is now.
struct Budget {
    steps: usize,
    depth: usize,
    /// Bytes of strings and keys read by the checks so far.
    read: usize,
    /// Set once a bound is passed: it ends the whole check, not only the
    /// branch of an `anyOf` or `oneOf` it happened in.
    halted: Option<Refusal>,
}

impl Budget {
    /// Count `bytes` more read by a check (a pattern, a length, a format).
    fn read(&mut self, bytes: usize, path: &str) -> Result<(), Refusal> {
        self.read = self.read.saturating_add(bytes);
        if self.read > MAX_READ_BYTES {
            return Err(self.halt(refuse(
                path,
                format!(
                    "the input is too complex to check against its schema (its strings would be read over {MAX_READ_BYTES} bytes in all)"
                ),
            )));
        }
        Ok(())
    }

    /// End the check with `why`.
    fn halt(&mut self, why: Refusal) -> Refusal {
        self.halted = Some(why.clone());
        why
    }
}

/// An operation's input schema, checked and with its patterns compiled.
#[derive(Debug)]
pub struct InputSchema {
    root: Value,
    patterns: HashMap<String, Arc<Regex>>,
}

/// The patterns compiled for one plugin's schemas, shared by its
/// operations (the SDK gives many the same one) and bounded in number.
#[derive(Debug, Default)]
pub struct Patterns(HashMap<String, Arc<Regex>>);

impl Patterns {
    /// `p` compiled, within the plugin's bounds.
    fn compile(&mut self, p: &str) -> Result<Arc<Regex>, String> {
        if let Some(re) = self.0.get(p) {
            return Ok(re.clone());
        }
        if self.0.len() >= MAX_PATTERNS {
            return Err(format!(
                "more than {MAX_PATTERNS} distinct patterns in the plugin's input schemas; share patterns or check the rest in the plugin"
            ));
        }
        let re = regex::RegexBuilder::new(p)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("pattern {p:?} does not compile within {PATTERN_SIZE_LIMIT} bytes: {e}"))?;
        let re = Arc::new(re);
        self.0.insert(p.to_owned(), re.clone());
        Ok(re)
    }
}

impl InputSchema {
    /// Parse and check a schema document on its own.
    pub fn compile(text: &str) -> Result<Self, SchemaError> {
        Self::compile_with(text, &mut Patterns::default())
    }

    /// Parse and check one of a plugin's schema documents, its patterns
    /// counted with the plugin's others in `patterns`.
    pub fn compile_with(text: &str, patterns: &mut Patterns) -> Result<Self, SchemaError> {
        let root: Value = serde_json::from_str(text).map_err(|e| SchemaError {
            place: "#".into(),
            message: format!("not JSON: {e}"),
        })?;
        let mut own = HashMap::new();
        {
            // Every schema in the document with its place, in one walk.
            let mut schemas = Vec::new();
            walk(&root, "#", &mut |node, place| {
                schemas.push((node, place.to_owned()))
            });
            for (node, place) in &schemas {
                check_keywords(&root, node, place, patterns, &mut own)?;
            }
            check_chains(&root, &schemas)?;
        }
        Ok(Self { root, patterns: own })
    }

    /// The schema document.
    pub fn document(&self) -> &Value {
        &self.root
    }

    /// Check `input`; the refusal names the first bad field.
    pub fn check(&self, input: &Value) -> Result<(), Refusal> {
        let mut budget = Budget {
            steps: 0,
            depth: 0,
            read: 0,
            halted: None,
        };
        self.node(&self.root, input, "$", &mut budget)
    }

    fn node(&self, schema: &Value, v: &Value, path: &str, budget: &mut Budget) -> Result<(), Refusal> {
        if let Some(why) = &budget.halted {
            return Err(why.clone());
        }
        budget.depth += 1;
        let result = self.node_within(schema, v, path, budget);
        budget.depth -= 1;
        match &budget.halted {
            Some(why) => Err(why.clone()),
            None => result,
        }
    }

    fn node_within(&self, schema: &Value, v: &Value, path: &str, steps: &mut Budget) -> Result<(), Refusal> {
        steps.steps += 1;
        if steps.steps > MAX_STEPS {
            return Err(steps.halt(refuse(
                path,
                format!("the input is too complex to check against its schema (over {MAX_STEPS} steps)"),
            )));
        }
        if steps.depth > MAX_CHECK_DEPTH {
            return Err(steps.halt(refuse(
                path,
                format!(
                    "the input is nested too deeply to check against its schema (over {MAX_CHECK_DEPTH} levels)"
                ),
            )));
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
            Value::String(text) => {
                steps.read(text.len(), path)?;
                self.string(s, text, path)?;
            }
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
        steps: &mut Budget,
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
                steps.read(key.len(), &here)?;
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

/// Refuse chains of `$ref`s and combinators that never end (a cycle back
/// to a schema without going into a property or an item, which the check
/// would follow for ever) or that are longer than
/// [`MAX_SAME_VALUE_CHAIN`], from every schema in the document.
fn check_chains(root: &Value, schemas: &[(&Value, String)]) -> Result<(), SchemaError> {
    // Every `$ref` must name one of `schemas`: one into `const`, `default`
    // or `examples` would be checked with patterns never compiled, and
    // with chains never counted.
    let known: std::collections::HashSet<*const Value> = schemas
        .iter()
        .map(|(node, _)| std::ptr::from_ref(*node))
        .collect();
    let mut memo = HashMap::new();
    for (node, place) in schemas {
        let outcome = match node.get("$ref").and_then(Value::as_str) {
            Some(r) if resolve(root, r).is_none_or(|t| !known.contains(&std::ptr::from_ref(t))) => {
                Err(format!(
                    "$ref {r:?} names a place that is not a schema (one under properties, patternProperties, additionalProperties, items, $defs or a combinator)"
                ))
            }
            _ => chain(root, node, &mut memo, &mut Vec::new()).map(drop),
        };
        outcome.map_err(|message| SchemaError {
            place: place.clone(),
            message,
        })?;
    }
    Ok(())
}

/// Call `f` on `node` and every schema under it: the values of
/// `properties`, `$defs` and `patternProperties`, `additionalProperties`,
/// `items`, and each entry of a combinator.
fn walk<'a>(node: &'a Value, place: &str, f: &mut impl FnMut(&'a Value, &str)) {
    f(node, place);
    let Value::Object(s) = node else {
        return;
    };
    for (k, v) in s {
        let here = format!("{place}/{k}");
        match (k.as_str(), v) {
            ("properties" | "$defs" | "patternProperties", Value::Object(m)) => {
                for (name, sub) in m {
                    walk(sub, &format!("{here}/{name}"), f);
                }
            }
            ("additionalProperties" | "items", sub) => walk(sub, &here, f),
            ("anyOf" | "allOf" | "oneOf", Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    walk(sub, &format!("{here}/{i}"), f);
                }
            }
            _ => {}
        }
    }
}

/// The schemas a check of `node` applies to the same value.
fn same_value<'a>(root: &'a Value, node: &'a Value) -> Vec<&'a Value> {
    let Value::Object(s) = node else {
        return Vec::new();
    };
    let mut subs: Vec<&Value> = Vec::new();
    if let Some(Value::String(r)) = s.get("$ref")
        && let Some(target) = resolve(root, r)
    {
        subs.push(target);
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(a)) = s.get(k) {
            subs.extend(a);
        }
    }
    subs
}

fn too_long() -> String {
    format!(
        "$ref, anyOf, allOf and oneOf lead through more than {MAX_SAME_VALUE_CHAIN} schemas for one value"
    )
}

/// The longest chain of schemas, `node` first, that a check follows for
/// one value. `memo` is keyed by each node's address in `root`, which is
/// borrowed throughout.
fn chain(
    root: &Value,
    node: &Value,
    memo: &mut HashMap<*const Value, usize>,
    path: &mut Vec<*const Value>,
) -> Result<usize, String> {
    let key: *const Value = node;
    if let Some(&n) = memo.get(&key) {
        // Known from another start: it still counts from this one.
        if path.len() + n > MAX_SAME_VALUE_CHAIN {
            return Err(too_long());
        }
        return Ok(n);
    }
    if path.contains(&key) {
        return Err(
            "a $ref leads back to a schema it came from without going into a property or an item, so checking any input would never end"
                .into(),
        );
    }
    if path.len() >= MAX_SAME_VALUE_CHAIN {
        return Err(too_long());
    }
    path.push(key);
    let mut longest = 0;
    for sub in same_value(root, node) {
        longest = longest.max(chain(root, sub, memo, path)?);
    }
    path.pop();
    memo.insert(key, longest + 1);
    Ok(longest + 1)
}

/// Check one schema's keywords (those under it are [`walk`]ed to in
/// turn): known keywords only, refs that resolve, combinators that are
/// arrays, patterns compiled within the plugin's bounds.
fn check_keywords(
    root: &Value,
    node: &Value,
    place: &str,
    patterns: &mut Patterns,
    own: &mut HashMap<String, Arc<Regex>>,
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
    let mut compile = |p: &str| {
        let re = patterns.compile(p).map_err(bad)?;
        own.insert(p.to_owned(), re);
        Ok::<(), SchemaError>(())
    };
    for (k, v) in s {
        if !ASSERTIONS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
            return Err(bad(format!(
                "keyword '{k}' is not one the gateway checks ({}); describe the input with those, or leave the schema out",
                ASSERTIONS.join(", ")
            )));
        }
        match (k.as_str(), v) {
            ("$ref", Value::String(r)) if resolve(root, r).is_none() => {
                return Err(bad(format!("$ref {r:?} does not name a place in this document")));
            }
            ("$ref", Value::String(_)) => {}
            ("$ref", _) => return Err(bad("$ref must be a string".into())),
            ("pattern", Value::String(p)) => compile(p)?,
            ("patternProperties", Value::Object(m)) => {
                for p in m.keys() {
                    compile(p)?;
                }
            }
            ("anyOf" | "allOf" | "oneOf", Value::Array(_)) => {}
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

    /// A probe's schemas: each made the check recurse until the worker's
    /// stack overflowed, which aborted the gateway.
    #[test]
    fn ref_cycles_through_no_property_are_refused_at_load() {
        for cyclic in [
            json!({"$ref": "#"}),
            json!({"anyOf": [{"$ref": "#"}, {"type": "null"}]}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
            json!({"type": "object", "properties": {"x": {"oneOf": [{"$ref": "#/properties/x"}]}}}),
        ] {
            let e = InputSchema::compile(&cyclic.to_string()).unwrap_err();
            assert!(e.message.contains("never end"), "{cyclic}: {e}");
        }
        // Recursion through a property or an item is a tree, not a cycle.
        let tree = schema(json!({
            "$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node",
        }));
        assert!(tree.check(&json!({"children": [{"children": []}]})).is_ok());
        let e = tree.check(&json!({"children": [{"children": 1}]})).unwrap_err();
        assert_eq!(e.path, "$.children[0].children");
    }

    #[test]
    fn long_ref_chains_are_refused_at_load() {
        let mut defs = serde_json::Map::new();
        for i in 0..MAX_SAME_VALUE_CHAIN {
            defs.insert(format!("d{i}"), json!({"$ref": format!("#/$defs/d{}", i + 1)}));
        }
        defs.insert(format!("d{MAX_SAME_VALUE_CHAIN}"), json!({"type": "null"}));
        let long = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        let e = InputSchema::compile(&long.to_string()).unwrap_err();
        assert!(e.message.contains("more than 32 schemas"), "{e}");
    }

    /// A `$ref` into an annotation names a value the scan never checked
    /// (its patterns uncompiled, its refs unfollowed).
    #[test]
    fn refs_must_name_schemas() {
        for bad in [
            json!({"$ref": "#/default", "default": {"type": "string", "pattern": "^a$"}}),
            json!({"$ref": "#/examples/0", "examples": [{"$ref": "#"}]}),
            json!({"$ref": "#/properties", "properties": {"a": {}}}),
        ] {
            let e = InputSchema::compile(&bad.to_string()).unwrap_err();
            assert!(e.message.contains("not a schema"), "{bad}: {e}");
        }
        assert!(
            InputSchema::compile(&json!({"$ref": "#/$defs/a", "$defs": {"a": {"type": "null"}}}).to_string())
                .is_ok()
        );
    }

    /// The deepest input JSON allows, through a recursive schema, is
    /// checked (or refused) on a stack much smaller than a worker's.
    #[test]
    fn the_deepest_input_is_checked_on_a_small_stack() {
        let tree = schema(json!({
            "$defs": {"n": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"$ref": "#/$defs/n"}}]}},
            "$ref": "#/$defs/n",
        }));
        let mut deep = String::from("null");
        for _ in 0..127 {
            deep = format!("[{deep}]");
        }
        let deep: Value = serde_json::from_str(&deep).unwrap();
        let result = std::thread::Builder::new()
            .stack_size(3 << 19)
            .spawn(move || tree.check(&deep).map_err(|e| e.message))
            .unwrap()
            // An overflow would abort the whole test binary, not fail here.
            .join()
            .expect("the check's thread");
        let message = result.unwrap_err();
        assert!(message.contains("nested too deeply"), "{message}");
    }

    /// A probe's schema: branches that each match one big string against a
    /// pattern multiply the work; the check stops at its byte budget.
    #[test]
    fn branches_over_a_big_string_stop_at_the_read_budget() {
        let mut level = json!({"type": "string", "pattern": "\\bq"});
        for _ in 0..5 {
            level = json!({"anyOf": vec![level; 10]});
        }
        let s = schema(level);
        let big = Value::String("é".repeat(1 << 19));
        let e = s.check(&big).unwrap_err();
        assert!(e.message.contains("too complex"), "{e}");
        // One read of a big string is well within it.
        let plain = schema(json!({"type": "string", "pattern": "^[^q]*$"}));
        assert!(plain.check(&big).is_ok());
    }

    #[test]
    fn a_plugins_patterns_are_bounded_in_number_and_size() {
        let mut patterns = Patterns::default();
        for i in 0..MAX_PATTERNS {
            let s = json!({"type": "string", "pattern": format!("^a{i}$")}).to_string();
            InputSchema::compile_with(&s, &mut patterns).unwrap();
        }
        // The same pattern again is shared, not counted twice.
        InputSchema::compile_with(&json!({"pattern": "^a0$"}).to_string(), &mut patterns).unwrap();
        let e = InputSchema::compile_with(&json!({"pattern": "^b$"}).to_string(), &mut patterns).unwrap_err();
        assert!(e.message.contains("more than 256 distinct patterns"), "{e}");
        // The probe's pattern: about 0.8 MB compiled each.
        let e = InputSchema::compile(&json!({"pattern": "\\w{12}x1"}).to_string()).unwrap_err();
        assert!(e.message.contains("does not compile within"), "{e}");
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
