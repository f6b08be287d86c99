//! Tool argument decoding (`tools::parse_args`) on arbitrary JSON, for
//! tools with flattened paging, nested rows and cell values. Oracles:
//! it accepts exactly what serde_json accepts for the same parameter type
//! (naming the argument must not change the verdict), and a refusal names
//! an argument the call has (or one it lacks, as "is required"), never
//! one it made up.
#![no_main]

use coda_mcp::tools::error::ToolError;
use coda_mcp::tools::pages::ListPageContentParams;
use coda_mcp::tools::parse_args;
use coda_mcp::tools::rows::{BulkUpdateParams, CreateRowsParams, ListRowsParams, UpdateRowParams};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

fn check<P: DeserializeOwned + schemars::JsonSchema + 'static>(args: &Map<String, Value>) {
    let ours = parse_args::<P>(args.clone());
    let serde = serde_json::from_value::<P>(Value::Object(args.clone()));
    assert_eq!(
        ours.is_ok(),
        serde.is_ok(),
        "{}: {args:?}: ours {:?}, serde_json {:?}",
        std::any::type_name::<P>(),
        ours.as_ref().err().map(ToString::to_string),
        serde.as_ref().err().map(ToString::to_string)
    );
    let Err(e) = ours else { return };
    let ToolError::InvalidArgument { name, reason } = &e else {
        panic!("not an argument error: {e}");
    };
    let head = name.split(['.', '[']).next().unwrap_or(name.as_str());
    assert!(
        name == "arguments" || reason == "is required" || args.contains_key(head),
        "{}: {args:?}: names `{name}`, which the call does not have: {reason}",
        std::any::type_name::<P>()
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(args)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check::<ListRowsParams>(&args);
    check::<ListPageContentParams>(&args);
    check::<CreateRowsParams>(&args);
    check::<UpdateRowParams>(&args);
    check::<BulkUpdateParams>(&args);
});
