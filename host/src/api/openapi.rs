//! The gateway as one OpenAPI 3.1 document: the fixed endpoints, the error
//! body, and every served family's operations as POST paths whose request
//! and response bodies are the operations' own JSON Schemas.
//!
//! OpenAPI 3.1 schemas are JSON Schema 2020-12, so a plugin's schemas go in
//! as they are, except for where they point: each operation's `$defs` move
//! to `components/schemas` under `FAMILY.OP.in.DEF` / `FAMILY.OP.out.DEF`
//! and its `$ref`s are rewritten to match, because a `#/$defs/...` reference
//! resolves against the whole document once embedded.

use serde_json::{Map, Value, json};

use crate::plugin::OpDescription;

/// One served family: its name and its plugin's operations.
pub struct FamilyOps<'a> {
    /// The family.
    pub family: &'a str,
    /// Its plugin's operations.
    pub ops: &'a [OpDescription],
}

/// A component name may only use `[A-Za-z0-9._-]`.
fn component_name(parts: &[&str]) -> String {
    parts
        .join(".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Move `schema`'s `$defs` into `components` under `prefix.DEF` and point
/// its references there; returns the schema without `$defs`/`$schema`.
fn hoist(schema: &Value, prefix: &str, components: &mut Map<String, Value>) -> Value {
    let mut schema = schema.clone();
    let defs = schema
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("$defs")
        })
        .and_then(|d| match d {
            Value::Object(d) => Some(d),
            _ => None,
        })
        .unwrap_or_default();
    let rename = |name: &str| format!("#/components/schemas/{}", component_name(&[prefix, name]));
    for (name, mut def) in defs {
        rewrite_refs(&mut def, &rename);
        components.insert(component_name(&[prefix, &name]), def);
    }
    rewrite_refs(&mut schema, &rename);
    schema
}

fn rewrite_refs(v: &mut Value, rename: &dyn Fn(&str) -> String) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match (k.as_str(), &*x) {
                    ("$ref", Value::String(r)) => {
                        *x = match r.strip_prefix("#/$defs/") {
                            Some(name) => Value::String(rename(name)),
                            // A reference to the schema's own root (or
                            // elsewhere): keep it within its component.
                            None => Value::String(r.clone()),
                        };
                    }
                    _ => rewrite_refs(x, rename),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| rewrite_refs(x, rename)),
        _ => {}
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

fn family_param() -> Value {
    json!({"name": "family", "in": "path", "required": true, "schema": {"type": "string"}})
}

/// The document, for the families the caller may see.
pub fn document(version: &str, families: &[FamilyOps<'_>]) -> Value {
    let mut components = Map::new();
    components.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable code; see docs/api.md"},
                    "message": {"type": "string"},
                    "kernel": {
                        "type": "object",
                        "properties": {
                            "errno": {"type": "integer"},
                            "message": {"type": ["string", "null"]},
                            "offset": {"type": ["integer", "null"]},
                        },
                    },
                },
            }},
        }),
    );
    let any = json!({"description": "JSON", "content": {"application/json": {"schema": {}}}});
    let mut paths = Map::new();
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Liveness and counts", "responses": {"200": any}}}),
    );
    paths.insert(
        "/v1/families".into(),
        json!({"get": {"summary": "Every family the kernel has or a family file configures", "responses": {"200": any, "default": error_response("error")}}}),
    );
    paths.insert(
        "/v1/families/{family}".into(),
        json!({"get": {"summary": "One family: kernel view, plugin, listener, policy", "parameters": [family_param()], "responses": {"200": any, "default": error_response("error")}}}),
    );
    paths.insert(
        "/v1/families/{family}/events".into(),
        json!({"get": {
            "summary": "Server-Sent Events of the family's plugin",
            "parameters": [family_param(), {"name": "topic", "in": "query", "required": false, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "default": error_response("error")},
        }}),
    );
    paths.insert(
        "/v1/families/{family}/ops/{op}/schema".into(),
        json!({"get": {
            "summary": "An operation's input and output JSON Schemas",
            "parameters": [family_param(), {"name": "op", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": any, "default": error_response("error")},
        }}),
    );
    paths.insert(
        "/v1/plugins".into(),
        json!({"get": {"summary": "Configured plugins and their state", "responses": {"200": any, "default": error_response("error")}}}),
    );
    paths.insert(
        "/v1/plugins/{family}/reload".into(),
        json!({"post": {"summary": "Reload one family's file and plugin", "parameters": [family_param()], "responses": {"200": any, "default": error_response("error")}}}),
    );
    paths.insert(
        "/v1/reload".into(),
        json!({"post": {"summary": "Re-read every family file", "responses": {"200": any, "default": error_response("error")}}}),
    );
    paths.insert(
        "/v1/openapi.json".into(),
        json!({"get": {"summary": "This document", "responses": {"200": any}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}),
    );
    for f in families {
        for op in f.ops {
            let request = match &op.input_schema {
                Some(s) => hoist(
                    s.document(),
                    &format!("{}.{}.in", f.family, op.name),
                    &mut components,
                ),
                None => json!({}),
            };
            let response = match &op.output_schema {
                Some(s) => hoist(s, &format!("{}.{}.out", f.family, op.name), &mut components),
                None => json!({}),
            };
            let path = format!("/v1/families/{}/ops/{}", f.family, op.name);
            paths.insert(
                path,
                json!({"post": {
                    "operationId": component_name(&[f.family, &op.name]),
                    "summary": op.summary,
                    "tags": [f.family],
                    "x-writes": op.writes,
                    "requestBody": {"required": false, "content": {"application/json": {"schema": request}}},
                    "responses": {
                        "200": {"description": "the operation's output", "content": {"application/json": {"schema": response}}},
                        "default": error_response("error; `bad-input` names the field"),
                    },
                }}),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "genl-gateway",
            "version": version,
            "description": "Generic netlink over HTTP/JSON. Errors: docs/api.md.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": components},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defs_move_to_components_and_refs_follow() {
        let mut c = Map::new();
        let s = json!({"$schema": "x", "properties": {"a": {"$ref": "#/$defs/set-a"}}, "$defs": {"set-a": {"properties": {"b": {"$ref": "#/$defs/set-a"}}}}});
        let out = hoist(&s, "netdev.dev-get.in", &mut c);
        assert_eq!(
            out["properties"]["a"]["$ref"],
            "#/components/schemas/netdev.dev-get.in.set-a"
        );
        assert_eq!(
            c["netdev.dev-get.in.set-a"]["properties"]["b"]["$ref"],
            "#/components/schemas/netdev.dev-get.in.set-a"
        );
        assert!(out.get("$defs").is_none() && out.get("$schema").is_none());
    }
}
