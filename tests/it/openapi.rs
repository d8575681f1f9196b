//! `/api/openapi.json` is kept true: a valid OpenAPI 3.1 document whose every
//! operation the live daemon answers with a documented status and shape, and
//! which names every path the API routes on.

use crate::servers::temp_dir;
use crate::support::{DeskConfig, http_raw, mail};
use serde_json::Value;

/// Follows `{"$ref": "#/components/..."}` within the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = r
                .strip_prefix("#/")
                .unwrap_or_else(|| panic!("only local refs: {r}"))
                .split('/')
                .fold(doc, |at, key| &at[key]);
            assert!(!target.is_null(), "the ref {r} resolves");
            resolve(doc, target)
        }
        None => v,
    }
}

/// Every `$ref` anywhere in `v` resolves.
fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(o) => {
            if o.contains_key("$ref") {
                resolve(doc, v);
            }
            o.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}

/// Whether `v` fits `schema` in its type and required keys (allOf merged).
fn fits(doc: &Value, schema: &Value, v: &Value) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().try_for_each(|s| fits(doc, s, v));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let actual = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !(types.contains(&actual) || (actual == "integer" && types.contains(&"number"))) {
        return Err(format!("expected {types:?}, got {v}"));
    }
    if let (Some(req), Value::Object(o)) = (schema["required"].as_array(), v) {
        for k in req.iter().filter_map(Value::as_str) {
            if !o.contains_key(k) {
                return Err(format!("missing {k} in {v}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, s) in props {
                if let Some(x) = o.get(k) {
                    fits(doc, s, x).map_err(|e| format!("{k}: {e}"))?;
                }
            }
        }
    }
    if let (Some(items), Value::Array(a)) = (schema.get("items"), v) {
        for x in a {
            fits(doc, items, x)?;
        }
    }
    Ok(())
}

#[test]
fn the_openapi_document_is_valid_and_true_of_the_live_api() {
    let token_file = temp_dir("openapi").join("token");
    std::fs::write(&token_file, "admin-token-openapi-1\n").unwrap();
    let desk = DeskConfig::new()
        .http(&format!("token_file = \"{}\"", token_file.display()))
        .build();
    let daemon = desk.start();
    let port = desk.http_port;
    let raw = mail(
        "Bob <bob@customer.test>",
        "support@example.com",
        "Hello",
        "o1@customer.test",
        "",
        "Hi",
    );
    desk.ingest(&[&raw]);
    let auth = "Authorization: Bearer admin-token-openapi-1";
    let (status, text) = http_raw(
        port,
        &format!("GET /api/openapi.json HTTP/1.1\nHost: 127.0.0.1:{port}\n{auth}"),
        b"",
    );
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    check_refs(&doc, &doc);
    let paths = doc["paths"].as_object().unwrap();

    // Every path the API routes on is documented.
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/transports/http.rs")).unwrap();
    let routed = regex::Regex::new(r#""(/api/[a-z_./]+[a-z]|/healthz|/readyz|/metrics)""#).unwrap();
    let placeholder = regex::Regex::new(r"\{[a-z]+\}").unwrap();
    let patterns: Vec<regex::Regex> = paths
        .keys()
        .map(|k| regex::Regex::new(&format!("^{}$", placeholder.replace_all(k, "[^/]+"))).unwrap())
        .collect();
    for c in routed.captures_iter(&source) {
        let p = &c[1];
        let documented = paths.contains_key(p) || patterns.iter().any(|r| r.is_match(p));
        assert!(documented, "{p} is routed but not in the document");
    }

    let named = regex::Regex::new(r"\{([a-z]+)\}").unwrap();
    // Every operation answers with a documented status, and its JSON fits the schema.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            // Path parameters are declared.
            let declared: Vec<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| resolve(&doc, p))
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            for name in named.captures_iter(path) {
                assert!(
                    declared.contains(&name[1].to_string()),
                    "{method} {path}: {{{}}} declared",
                    &name[1]
                );
            }
            let live = path
                .replace("{id}", "1")
                .replace("{ticket}", "1")
                .replace("{signature}", "notasignature")
                .replace("{rating}", "3");
            let (content_type, body): (&str, &[u8]) = match (method.as_str(), path.as_str()) {
                ("post", "/api/ingest" | "/api/explain") => ("message/rfc822", raw.as_bytes()),
                ("post", _) => ("application/json", b"{}"),
                _ => ("application/json", b""),
            };
            let head = format!(
                "{} {live} HTTP/1.1\nHost: 127.0.0.1:{port}\n{auth}\nContent-Type: {content_type}",
                method.to_uppercase()
            );
            let (status, answer) = http_raw(port, &head, body);
            let documented = &op["responses"][status.to_string()];
            assert!(
                !documented.is_null(),
                "{method} {path} answered {status}, which is not documented: {answer}"
            );
            let documented = resolve(&doc, documented);
            if let Some(schema) = documented["content"]["application/json"].get("schema") {
                let v: Value = serde_json::from_str(&answer)
                    .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {answer}"));
                if let Err(e) = fits(&doc, schema, &v) {
                    panic!("{method} {path} {status}: {e}");
                }
            }
        }
    }
    // And what is not documented is not there.
    let (status, _) = http_raw(
        port,
        &format!("GET /api/nothing HTTP/1.1\nHost: 127.0.0.1:{port}\n{auth}"),
        b"",
    );
    assert_eq!(status, 404);
    daemon.stop();
}
