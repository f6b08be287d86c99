//! The Coda OpenAPI 1.5.0 spec (`tests/data/coda-openapi.json`, provenance in
//! `tests/data/PROVENANCE.md`) as a test oracle:
//! finds the response schema of an operation, turns it into plain JSON
//! Schema and validates bodies against it; also synthesises minimal valid
//! objects from a schema name so the fake can build its payloads from the
//! spec instead of from memory.
//!
//! OpenAPI 3.0 is not JSON Schema, so schemas are normalised first:
//! `$ref`s are inlined, `allOf` parts are merged into one object (each part
//! carries `additionalProperties: false`, which would otherwise reject the
//! other parts' fields), `nullable` becomes a `null` alternative, and
//! `required` entries that are not declared properties of a closed object are
//! dropped (the spec's `Table.required` lists an undeclared `viewId`), and `oneOf` is read as `anyOf` (the spec's
//! alternatives overlap, e.g. a cell value is both a `Value` and a `RichValue`).
#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

pub const OPENAPI_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/coda-openapi.json");

pub struct Spec {
    doc: Value,
}

pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(OPENAPI_PATH)
            .unwrap_or_else(|e| panic!("cannot read {OPENAPI_PATH}: {e}"));
        Spec {
            doc: serde_json::from_str(&text).expect("openapi.json is JSON"),
        }
    })
}

const MAX_DEPTH: usize = 40;

impl Spec {
    fn lookup(&self, reference: &str) -> &Value {
        let ptr = reference.strip_prefix('#').expect("local $ref");
        self.doc
            .pointer(ptr)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"))
    }

    pub fn schema(&self, name: &str) -> Value {
        self.normalise(&json!({"$ref": format!("#/components/schemas/{name}")}), 0)
    }

    /// Inline refs, merge allOf, translate nullable; JSON Schema out.
    pub fn normalise(&self, s: &Value, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return json!({});
        }
        let Some(obj) = s.as_object() else {
            return s.clone();
        };
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            return self.normalise(self.lookup(r), depth + 1);
        }
        let mut out = Map::new();
        let nullable = obj
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for (k, v) in obj {
            if k.starts_with("x-")
                || matches!(
                    k.as_str(),
                    "nullable"
                        | "discriminator"
                        | "example"
                        | "examples"
                        | "description"
                        | "format"
                        | "allOf"
                        | "readOnly"
                        | "writeOnly"
                        | "deprecated"
                )
            {
                continue;
            }
            let nv = match k.as_str() {
                "properties" => Value::Object(
                    v.as_object()
                        .unwrap()
                        .iter()
                        .map(|(pk, pv)| (pk.clone(), self.normalise(pv, depth + 1)))
                        .collect(),
                ),
                "items" | "not" => self.normalise(v, depth + 1),
                "additionalProperties" if v.is_object() => self.normalise(v, depth + 1),
                // The spec uses oneOf for overlapping alternatives (a cell
                // value is a `Value` or a `RichValue`, and a string is both),
                // which real responses could never satisfy; read it as anyOf.
                "oneOf" | "anyOf" => Value::Array(
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| self.normalise(x, depth + 1))
                        .collect(),
                ),
                _ => v.clone(),
            };
            let key = if k == "oneOf" {
                "anyOf".to_owned()
            } else {
                k.clone()
            };
            out.insert(key, nv);
        }
        if let Some(parts) = obj.get("allOf").and_then(Value::as_array) {
            let mut props = Map::new();
            let mut required: Vec<Value> = Vec::new();
            let mut closed = false;
            let mut others = Vec::new();
            for part in parts {
                let p = self.normalise(part, depth + 1);
                let is_object_part =
                    p.get("properties").is_some() || p.get("type") == Some(&json!("object"));
                if !is_object_part {
                    others.push(p);
                    continue;
                }
                if let Some(pp) = p.get("properties").and_then(Value::as_object) {
                    props.extend(pp.clone());
                }
                for r in p
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !required.contains(r) {
                        required.push(r.clone());
                    }
                }
                closed |= p.get("additionalProperties") == Some(&json!(false));
            }
            if !props.is_empty() || !required.is_empty() {
                out.insert("type".into(), json!("object"));
                out.insert("properties".into(), Value::Object(props));
                out.insert("required".into(), Value::Array(required));
                if closed {
                    out.insert("additionalProperties".into(), json!(false));
                }
            }
            for o in others {
                // Non-object allOf parts (e.g. string refinements): keep them as constraints.
                out.entry("allOf")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .unwrap()
                    .push(o);
            }
        }
        // Drop required names a closed object does not declare (Table.viewId).
        if out.get("additionalProperties") == Some(&json!(false))
            && let (Some(props), Some(req)) = (
                out.get("properties").and_then(Value::as_object).cloned(),
                out.get("required").and_then(Value::as_array).cloned(),
            )
        {
            let kept: Vec<Value> = req
                .into_iter()
                .filter(|r| r.as_str().is_some_and(|n| props.contains_key(n)))
                .collect();
            out.insert("required".into(), Value::Array(kept));
        }
        let mut schema = Value::Object(out);
        if nullable {
            schema = match schema.get("type").cloned() {
                Some(Value::String(t)) => {
                    schema["type"] = json!([t, "null"]);
                    if let Some(e) = schema.get_mut("enum").and_then(Value::as_array_mut) {
                        e.push(Value::Null);
                    }
                    schema
                }
                _ => json!({"anyOf": [schema, {"type": "null"}]}),
            };
        }
        schema
    }

    /// The operation template matching a concrete API path (relative to the base).
    pub fn match_path(&self, path: &str) -> Option<String> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for tpl in self.doc["paths"].as_object().unwrap().keys() {
            let t: Vec<&str> = tpl.trim_matches('/').split('/').collect();
            if t.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let ok = t.iter().zip(&segs).all(|(a, b)| {
                if a.starts_with('{') || a.starts_with("${") {
                    true
                } else {
                    literal += 1;
                    a == b
                }
            });
            if ok && best.as_ref().is_none_or(|(n, _)| literal > *n) {
                best = Some((literal, tpl.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    /// JSON schema of the response body for (method, path, status).
    pub fn response_schema(&self, method: &str, path: &str, status: u16) -> Result<Value, String> {
        let tpl = self
            .match_path(path)
            .ok_or_else(|| format!("{method} {path}: no such path in the spec"))?;
        let op = self.doc["paths"][&tpl]
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("{method} {tpl}: no such operation in the spec"))?;
        let resp = op["responses"]
            .get(status.to_string())
            .ok_or_else(|| format!("{method} {tpl}: status {status} is not declared"))?;
        let resp = match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => self.lookup(r),
            None => resp,
        };
        let schema = resp
            .pointer("/content/application~1json/schema")
            .ok_or_else(|| format!("{method} {tpl} {status}: no JSON body declared"))?;
        Ok(self.normalise(schema, 0))
    }

    /// Validate a response body; `Err` says what does not match.
    ///
    /// The spec declares no 5xx responses, but Coda sends them (502/503/504)
    /// with its standard error body; those are checked against the error
    /// schema the spec uses for every declared error.
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        let schema = if status >= 500 {
            let err = self.lookup("#/components/responses/NotFoundError");
            self.normalise(&err["content"]["application/json"]["schema"], 0)
        } else {
            self.response_schema(method, path, status)?
        };
        validate(&schema, body).map_err(|e| format!("{method} {path} {status}: {e}\nbody: {body}"))
    }

    /// JSON schema of the request body of (method, path).
    pub fn request_schema(&self, method: &str, path: &str) -> Option<Value> {
        let tpl = self.match_path(path)?;
        let op = self.doc["paths"][&tpl].get(method.to_ascii_lowercase())?;
        let schema = op.pointer("/requestBody/content/application~1json/schema")?;
        Some(self.normalise(schema, 0))
    }

    /// Check a request's query string against the operation's declared
    /// query parameters: every name must be declared and every value valid
    /// for its schema. Arrays are comma-separated (`explode: false`, the
    /// only style the spec uses for them).
    pub fn validate_query(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
    ) -> Result<(), String> {
        if query.is_empty() {
            return Ok(());
        }
        let tpl = self
            .match_path(path)
            .ok_or_else(|| format!("{method} {path}: no such path in the spec"))?;
        let item = &self.doc["paths"][&tpl];
        let op = item
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("{method} {tpl}: no such operation in the spec"))?;
        let declared: Vec<Value> = [item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .map(|p| match p.get("$ref").and_then(Value::as_str) {
                Some(r) => self.lookup(r).clone(),
                None => p.clone(),
            })
            .filter(|p| p["in"] == "query")
            .collect();
        let mut problems = Vec::new();
        for (name, raw) in query {
            let Some(param) = declared.iter().find(|p| p["name"] == name.as_str()) else {
                problems.push(format!("undeclared query parameter {name}={raw}"));
                continue;
            };
            let schema = self.normalise(&param["schema"], 0);
            let typed = |s: &Value, raw: &str| -> Value {
                match s.get("type").and_then(Value::as_str) {
                    Some("integer") | Some("number") => {
                        serde_json::from_str(raw).unwrap_or_else(|_| json!(raw))
                    }
                    Some("boolean") => match raw {
                        "true" => json!(true),
                        "false" => json!(false),
                        _ => json!(raw),
                    },
                    _ => json!(raw),
                }
            };
            let value = if schema.get("type").and_then(Value::as_str) == Some("array") {
                let items = schema.get("items").cloned().unwrap_or(json!({}));
                Value::Array(raw.split(',').map(|x| typed(&items, x)).collect())
            } else {
                typed(&schema, raw)
            };
            if let Err(e) = validate(&schema, &value) {
                problems.push(format!("query parameter {name}={raw}: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{method} {path}: {}", problems.join("; ")))
        }
    }

    /// A minimal valid instance of a named schema: required fields only,
    /// taking the spec's examples where they exist.
    pub fn synth(&self, name: &str) -> Value {
        let raw = self.lookup(&format!("#/components/schemas/{name}")).clone();
        self.synth_raw(&raw, 0)
    }

    fn synth_raw(&self, s: &Value, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            return self.synth_raw(self.lookup(r), depth + 1);
        }
        if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
            let mut out = Map::new();
            for p in parts {
                if let Value::Object(m) = self.synth_raw(p, depth + 1) {
                    out.extend(m);
                }
            }
            return Value::Object(out);
        }
        if let Some(alts) = s
            .get("oneOf")
            .or_else(|| s.get("anyOf"))
            .and_then(Value::as_array)
        {
            return self.synth_raw(&alts[0], depth + 1);
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            return e[0].clone();
        }
        if let Some(ex) = s.get("example")
            && s.get("type") != Some(&json!("object"))
        {
            return ex.clone();
        }
        match s.get("type").and_then(Value::as_str) {
            Some("string") => json!("x"),
            Some("number") | Some("integer") => json!(1),
            Some("boolean") => json!(false),
            Some("array") => json!([]),
            _ => {
                let mut out = Map::new();
                let props = s.get("properties").and_then(Value::as_object);
                for r in s
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let r = r.as_str().unwrap();
                    if let Some(ps) = props.and_then(|p| p.get(r)) {
                        out.insert(r.to_owned(), self.synth_raw(ps, depth + 1));
                    }
                }
                Value::Object(out)
            }
        }
    }
}

/// Validate `value` against a (normalised) JSON schema.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .map_err(|e| format!("schema does not compile: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| format!("at {}: {}", e.instance_path(), e))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
