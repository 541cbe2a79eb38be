//! `template.yaml` against the code it deploys: the table is the one
//! `schema.rs` defines, every function's `Binary` is a binary of this
//! crate, and the WebSocket routes are the ones the functions serve.
//! (`scripts/test-aws` runs cfn-lint and `sam validate --lint` on it too.)

use std::path::Path;

use tether_functions::dynamo::TABLE;

fn template() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of one resource (from `  Name:` to the next resource).
fn resource<'a>(template: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("  {name}:");
    let mut lines = template.lines().skip_while(|l| *l != start);
    let mut block: Vec<&str> = lines.next().into_iter().collect();
    block.extend(lines.take_while(|l| l.starts_with("    ") || l.trim().is_empty()));
    assert!(!block.is_empty(), "template.yaml has no resource {name}");
    block
}

/// The values of `key: value` lines (trimmed), in order.
fn values<'a>(block: &[&'a str], key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}:");
    block
        .iter()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            l.strip_prefix(&prefix).map(|v| v.trim().trim_matches('"'))
        })
        .collect()
}

#[test]
fn the_table_is_the_one_schema_rs_defines() {
    let template = template();
    let table = resource(&template, "Table");
    assert_eq!(values(&table, "Type"), ["AWS::DynamoDB::Table"]);
    assert_eq!(values(&table, "BillingMode"), ["PAY_PER_REQUEST"]);
    assert_eq!(
        values(&table, "AttributeName"),
        [
            TABLE.hash_key,
            TABLE.range_key,
            TABLE.gsi_hash_key,
            TABLE.gsi_range_key,
            // key schema, then the index's key schema, then TTL
            TABLE.hash_key,
            TABLE.range_key,
            TABLE.gsi_hash_key,
            TABLE.gsi_range_key,
            TABLE.ttl_attribute,
        ]
    );
    assert_eq!(values(&table, "AttributeType"), ["S", "S", "S", "N"]);
    assert_eq!(values(&table, "KeyType"), ["HASH", "RANGE", "HASH", "RANGE"]);
    assert_eq!(values(&table, "IndexName"), [TABLE.gsi_name]);
    assert_eq!(values(&table, "ProjectionType"), ["KEYS_ONLY"]);
    assert_eq!(values(&table, "Enabled"), ["true"]);
    assert_eq!(values(&table, "PointInTimeRecoveryEnabled"), ["true"]);
}

#[test]
fn every_function_is_a_binary_of_this_crate() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("read Cargo.toml");
    let template = template();
    let binaries = values(&template.lines().collect::<Vec<_>>(), "Binary");
    assert_eq!(
        binaries,
        ["tether-connect", "tether-disconnect", "tether-message", "tether-http"]
    );
    for bin in binaries {
        assert!(
            manifest.contains(&format!("name = \"{bin}\"")),
            "template.yaml builds {bin}, which functions/Cargo.toml does not define"
        );
    }
    for function in ["ConnectFunction", "DisconnectFunction", "MessageFunction", "HttpFunction"] {
        let block = resource(&template, function);
        assert_eq!(values(&block, "BuildMethod"), ["rust-cargolambda"], "{function}");
    }
    let globals: Vec<&str> = template.lines().take_while(|l| *l != "Resources:").collect();
    assert_eq!(values(&globals, "Runtime"), ["provided.al2023"]);
    assert_eq!(values(&globals, "Architectures"), ["[arm64]"]);
}

#[test]
fn the_websocket_routes_are_connect_disconnect_and_default() {
    let template = template();
    let lines: Vec<&str> = template.lines().collect();
    assert_eq!(
        values(&lines, "RouteKey"),
        ["$connect", "$disconnect", "$default"]
    );
    assert_eq!(
        values(&lines, "RouteSelectionExpression"),
        ["$request.body.action"]
    );
    // Two-way: the reply is the integration response.
    assert_eq!(values(&resource(&template, "DefaultRoute"), "RouteResponseSelectionExpression"), ["$default"]);
    assert_eq!(values(&resource(&template, "DefaultRouteResponse"), "RouteResponseKey"), ["$default"]);
    let deployment = resource(&template, "WebSocketDeployment");
    for route in ["ConnectRoute", "DisconnectRoute", "DefaultRoute", "DefaultRouteResponse"] {
        assert!(
            deployment.iter().any(|l| l.trim() == format!("- {route}")),
            "the deployment must depend on {route}"
        );
    }
}
