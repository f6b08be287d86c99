//! Portable JSON Schemas for `tools/list`.
//!
//! schemars writes JSON Schema 2020-12 with `$schema`, `$ref`/`$defs`,
//! nullable types as `type: [T, "null"]` or `anyOf: [T, {type: null}]`,
//! documented enums as `oneOf` of `const`s, `format: uint32`, and `true`
//! for "any value". Several clients reject some of that: the TypeScript
//! SDK v1 refuses the whole `tools/list` when an output schema holds a bare
//! `true`; Gemini and strict gateways refuse `$ref`, type arrays, `const`
//! and `format`. [`portable`] rewrites a schema into the subset they all
//! accept: references inlined, one type per schema (optional means "not
//! required", never "null"), `enum` instead of `oneOf`/`const`, explicit
//! item types, no `$schema`/`$defs`/`format`, no `additionalProperties:
//! true` (it is the default).
//!
//! Structured results never carry `null` where these schemas name a type:
//! `tools::run` drops null fields before sending.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

/// Deepest `$ref` chain inlined; our types nest a few levels at most.
const MAX_DEPTH: usize = 32;

/// Schema of a cell value or filter value: a string, number or boolean.
pub fn scalar(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]
    })
}

/// Schema of a value Coda stores in a cell, as read back or as sent: a
/// scalar, an object (a rich value), or an array of those (a multi-select,
/// a list of people), written out so every schema keeps one type.
pub fn cell_value(_: &mut SchemaGenerator) -> Schema {
    let leaf = json!([
        {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "object"}
    ]);
    let mut inner = leaf.as_array().cloned().unwrap_or_default();
    inner.push(json!({"type": "array", "items": {"anyOf": leaf}}));
    let mut outer = leaf.as_array().cloned().unwrap_or_default();
    outer.push(json!({"type": "array", "items": {"anyOf": inner}}));
    json_schema!({ "anyOf": outer })
}

/// The portable form of a tool's input or output schema.
pub fn portable(schema: &Map<String, Value>) -> Map<String, Value> {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match walk(Value::Object(schema.clone()), &defs, 0) {
        Value::Object(mut o) => {
            o.entry("type").or_insert_with(|| json!("object"));
            o
        }
        _ => {
            let mut o = Map::new();
            o.insert("type".into(), json!("object"));
            o
        }
    }
}

/// Portable form of any `JsonSchema` type (for tests and resources).
pub fn portable_for<T: JsonSchema>() -> Map<String, Value> {
    let s = schemars::schema_for!(T);
    portable(s.as_object().expect("a type's schema is an object"))
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        _ => "object",
    }
}

fn walk(v: Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let mut o = match v {
        // "Any value": our only such places are lists of objects (rows,
        // list items); scalars and arrays are typed where they are declared.
        Value::Bool(_) => return json!({"type": "object"}),
        Value::Object(o) => o,
        other => return other,
    };
    if let Some(r) = o.remove("$ref") {
        let name = r.as_str().and_then(|r| r.rsplit('/').next()).unwrap_or("");
        let target = match defs.get(name) {
            Some(t) if depth < MAX_DEPTH => walk(t.clone(), defs, depth + 1),
            _ => json!({"type": "object"}),
        };
        let mut merged = target.as_object().cloned().unwrap_or_default();
        // Sibling keywords (description, default) describe this use.
        for (k, v) in o {
            merged.insert(k.clone(), walk_keyword(&k, v, defs, depth));
        }
        return Value::Object(merged);
    }
    for k in [
        "$schema",
        "$defs",
        "definitions",
        "format",
        "nullable",
        "$id",
    ] {
        o.remove(k);
    }
    if let Some(Value::Array(types)) = o.get("type").cloned() {
        let non_null: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        match non_null.len() {
            0 => {
                o.remove("type");
            }
            1 => {
                o.insert("type".into(), non_null[0].clone());
            }
            _ => {
                o.remove("type");
                o.insert(
                    "anyOf".into(),
                    Value::Array(non_null.into_iter().map(|t| json!({"type": t})).collect()),
                );
            }
        }
    }
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(alts)) = o.remove(key) else {
            continue;
        };
        let alts: Vec<Value> = alts
            .into_iter()
            .filter(|a| !is_null_schema(a))
            .map(|a| walk(a, defs, depth + 1))
            .collect();
        let consts: Option<Vec<Value>> = alts
            .iter()
            .map(|a| a.get("enum").and_then(Value::as_array).cloned())
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat());
        match consts {
            Some(values) if !values.is_empty() => {
                o.entry("type")
                    .or_insert_with(|| json!(type_of(&values[0])));
                o.insert("enum".into(), Value::Array(values));
            }
            _ if alts.len() == 1 => {
                let only = alts.into_iter().next().unwrap_or_default();
                if let Value::Object(inner) = only {
                    for (k, v) in inner {
                        // The outer description is about this use: keep it.
                        o.entry(k).or_insert(v);
                    }
                }
            }
            _ => {
                o.insert("anyOf".into(), Value::Array(alts));
            }
        }
    }
    if let Some(c) = o.remove("const") {
        o.entry("type").or_insert_with(|| json!(type_of(&c)));
        o.insert("enum".into(), json!([c]));
    }
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        if let Some(v) = o.remove(&k) {
            let v = walk_keyword(&k, v, defs, depth);
            if k == "additionalProperties" && v == json!(true) {
                continue;
            }
            o.insert(k, v);
        }
    }
    if o.get("type").and_then(Value::as_str) == Some("array") && !o.contains_key("items") {
        o.insert("items".into(), json!({"type": "object"}));
    }
    Value::Object(o)
}

fn walk_keyword(k: &str, v: Value, defs: &Map<String, Value>, depth: usize) -> Value {
    match (k, v) {
        ("properties", Value::Object(props)) => Value::Object(
            props
                .into_iter()
                .map(|(name, s)| (name, walk(s, defs, depth + 1)))
                .collect(),
        ),
        ("items", v) => walk(v, defs, depth + 1),
        ("additionalProperties", Value::Bool(b)) => Value::Bool(b),
        ("additionalProperties", v) => walk(v, defs, depth + 1),
        (_, v) => v,
    }
}

/// Problems that make a schema unportable, as `path: problem` lines.
/// Empty for a portable schema; used by the tests over every tool.
pub fn problems(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(schema, "", &mut out);
    out
}

fn check(v: &Value, path: &str, out: &mut Vec<String>) {
    let Some(o) = v.as_object() else {
        out.push(format!(
            "{path}: a bare {v} where a schema object is expected"
        ));
        return;
    };
    for k in [
        "$ref",
        "$defs",
        "definitions",
        "$schema",
        "format",
        "oneOf",
        "allOf",
        "const",
        "nullable",
    ] {
        if o.contains_key(k) {
            out.push(format!("{path}: uses {k}"));
        }
    }
    match o.get("type") {
        Some(Value::String(_)) => {}
        Some(other) => out.push(format!("{path}: type is {other}, not a single type")),
        None if o.contains_key("anyOf") || o.contains_key("enum") => {}
        None => out.push(format!("{path}: no type")),
    }
    if o.get("type").and_then(Value::as_str) == Some("array") {
        match o.get("items") {
            Some(items) => check(items, &format!("{path}/items"), out),
            None => out.push(format!("{path}: array without items")),
        }
    }
    if let Some(ap) = o.get("additionalProperties") {
        if ap.is_object() {
            check(ap, &format!("{path}/additionalProperties"), out);
        } else if ap == &json!(true) {
            out.push(format!("{path}: additionalProperties: true"));
        }
    }
    if let Some(Value::Object(props)) = o.get("properties") {
        for (name, s) in props {
            check(s, &format!("{path}/{name}"), out);
        }
    }
    if let Some(Value::Array(alts)) = o.get("anyOf") {
        for (i, a) in alts.iter().enumerate() {
            if is_null_schema(a) {
                out.push(format!("{path}/anyOf[{i}]: a null alternative"));
            }
            check(a, &format!("{path}/anyOf[{i}]"), out);
        }
    }
}

/// An output schema without its `description`s: clients use output schemas
/// to validate and models rarely see them, so the prose would only double
/// the size of `tools/list` (the fields are documented in the README).
pub fn without_descriptions(schema: Map<String, Value>) -> Map<String, Value> {
    fn strip(v: Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .filter(|(k, _)| k != "description")
                    .map(|(k, v)| {
                        // A property may itself be named "description".
                        if k == "properties" {
                            let props = match v {
                                Value::Object(p) => Value::Object(
                                    p.into_iter().map(|(n, s)| (n, strip(s))).collect(),
                                ),
                                other => other,
                            };
                            (k, props)
                        } else {
                            (k, strip(v))
                        }
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
            other => other,
        }
    }
    match strip(Value::Object(schema)) {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// Remove `null` members from objects, recursively, so results match
/// schemas that say "optional" by leaving a property out.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_nullables_and_const_enums_become_portable() {
        let s = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {"Fmt": {"oneOf": [{"const": "a", "type": "string"}, {"const": "b", "type": "string"}]}},
            "type": "object",
            "properties": {
                "f": {"anyOf": [{"$ref": "#/$defs/Fmt"}, {"type": "null"}], "description": "d"},
                "n": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
                "rows": {"type": "array", "items": true},
                "o": {"type": "object", "additionalProperties": true}
            }
        });
        let p = Value::Object(portable(s.as_object().unwrap()));
        assert_eq!(
            p,
            json!({
                "type": "object",
                "properties": {
                    "f": {"type": "string", "enum": ["a", "b"], "description": "d"},
                    "n": {"type": "integer", "minimum": 0},
                    "rows": {"type": "array", "items": {"type": "object"}},
                    "o": {"type": "object"}
                }
            })
        );
        assert!(problems(&p).is_empty(), "{:?}", problems(&p));
        assert!(!problems(&s).is_empty());
    }
}
