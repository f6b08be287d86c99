//! The OpenAPI oracle used to check the fake Coda must itself reject wrong
//! bodies, or every "matches the spec" assertion would be vacuous.

#[path = "support/openapi.rs"]
mod openapi;

use openapi::spec;
use serde_json::json;

#[test]
fn a_doc_missing_required_fields_is_rejected() {
    let err = spec()
        .validate_response(
            "GET",
            "/docs/AbC",
            200,
            &json!({"id": "AbC", "type": "doc"}),
        )
        .unwrap_err();
    assert!(err.contains("required"), "{err}");
}

#[test]
fn an_undeclared_property_on_a_closed_object_is_rejected() {
    let mut doc = spec().synth("Doc");
    spec()
        .validate_response("GET", "/docs/AbC", 200, &doc)
        .unwrap();
    doc["surprise"] = json!(1);
    assert!(
        spec()
            .validate_response("GET", "/docs/AbC", 200, &doc)
            .is_err()
    );
}

#[test]
fn all_of_results_accept_both_parts_and_reject_a_missing_request_id() {
    let ok = json!({"requestId": "r1", "id": "canvas-1"});
    spec()
        .validate_response("POST", "/docs/AbC/pages", 202, &ok)
        .unwrap();
    assert!(
        spec()
            .validate_response("POST", "/docs/AbC/pages", 202, &json!({"id": "canvas-1"}))
            .is_err()
    );
}

#[test]
fn wrong_enum_values_and_undeclared_statuses_are_rejected() {
    let mut page = spec().synth("Page");
    page["contentType"] = json!("spreadsheet");
    assert!(
        spec()
            .validate_response("GET", "/docs/AbC/pages/p", 200, &page)
            .is_err()
    );
    assert!(
        spec()
            .validate_response("GET", "/docs/AbC/pages/p", 418, &json!({}))
            .is_err()
    );
    assert!(
        spec()
            .validate_response("GET", "/nowhere/at/all", 200, &json!({}))
            .is_err()
    );
}

#[test]
fn error_bodies_must_be_codas_error_object() {
    let good = json!({"statusCode": 404, "statusMessage": "Not Found", "message": "gone"});
    spec()
        .validate_response("GET", "/docs/AbC", 404, &good)
        .unwrap();
    assert!(
        spec()
            .validate_response("GET", "/docs/AbC", 404, &json!({"error": "gone"}))
            .is_err()
    );
    assert!(
        spec()
            .validate_response("GET", "/docs/AbC", 503, &json!({"error": "down"}))
            .is_err()
    );
}

#[test]
fn a_table_without_the_undeclared_view_id_is_accepted() {
    let table = spec().synth("Table");
    assert!(table.get("viewId").is_none());
    spec()
        .validate_response("GET", "/docs/AbC/tables/t", 200, &table)
        .unwrap();
}
