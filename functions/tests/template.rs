//! `template.yaml` against the code it deploys: the table is the one
//! `schema.rs` defines, every function's `Binary` is a binary of this
//! crate, the WebSocket routes are the ones the functions serve, CloudFront
//! sends the origin secret the functions that check it are given, the
//! unauthenticated routes have their own, lower throttles, and the UI's CSP
//! and paths are the embedded host's (`local/src/host.rs`).
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

/// The lines after the first line of `block` that contains `marker`, trimmed
/// (`count` of them).
fn after<'a>(block: &[&'a str], marker: &str, count: usize) -> Vec<Vec<&'a str>> {
    block
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| block[i + 1..i + 1 + count].iter().map(|l| l.trim()).collect())
        .collect()
}

#[test]
fn the_origin_secret_reaches_cloudfront_and_exactly_the_functions_that_check_it() {
    use tether_functions::config::{ORIGIN_HEADER, ORIGIN_SECRET_VAR};
    let template = template();
    let var = format!("{ORIGIN_SECRET_VAR}:");
    // Taking requests from outside: `$connect` and the HTTP API.
    for function in ["ConnectFunction", "HttpFunction"] {
        let block = resource(&template, function);
        assert!(
            block.iter().any(|l| l.trim().starts_with(&var)),
            "{function} must get {ORIGIN_SECRET_VAR} (its cold start fails without it)"
        );
    }
    // Only for connections `$connect` accepted: no secret to hold.
    for function in ["DisconnectFunction", "MessageFunction"] {
        let block = resource(&template, function);
        assert!(!block.iter().any(|l| l.contains(ORIGIN_SECRET_VAR)), "{function}");
    }
    let globals: Vec<&str> = template.lines().take_while(|l| *l != "Resources:").collect();
    assert!(!globals.iter().any(|l| l.contains(ORIGIN_SECRET_VAR)), "not in Globals");

    // CloudFront sends the same value in ORIGIN_HEADER to both API origins.
    let distribution = resource(&template, "Distribution");
    let names = values(&distribution, "HeaderName");
    assert_eq!(names.len(), 2, "one origin header per API origin: {names:?}");
    for name in names {
        assert!(name.eq_ignore_ascii_case(ORIGIN_HEADER), "{name}");
    }
    let lines: Vec<&str> = template.lines().collect();
    let in_functions = after(&lines, &format!("{var} !If"), 3);
    let in_origins = after(&distribution, "HeaderValue: !If", 3);
    assert_eq!((in_functions.len(), in_origins.len()), (2, 2));
    for expression in in_functions.iter().chain(&in_origins) {
        assert_eq!(expression, &in_functions[0], "every copy of the secret must be the same expression");
    }
    // A given secret, else one derived from the stack.
    assert_eq!(in_functions[0][0], "- HasOriginSecret");
    assert_eq!(in_functions[0][1], "- !Ref OriginSecret");
    assert!(in_functions[0][2].contains("AWS::StackId") && in_functions[0][2].contains("${Table}"));
    let parameter = resource(&template, "OriginSecret");
    assert_eq!(values(&parameter, "NoEcho"), ["true"]);
}

/// The route settings' `ThrottlingBurstLimit` and `ThrottlingRateLimit`
/// values of a block, in order.
fn throttles(block: &[&str]) -> Vec<(u64, u64)> {
    let number = |v: &str| v.parse::<u64>().unwrap_or_else(|_| panic!("{v} is not a number"));
    let bursts = values(block, "ThrottlingBurstLimit");
    let rates = values(block, "ThrottlingRateLimit");
    assert_eq!(bursts.len(), rates.len());
    bursts.into_iter().zip(rates).map(|(b, r)| (number(b), number(r))).collect()
}

#[test]
fn unauthenticated_routes_are_throttled_below_the_message_route() {
    let template = template();
    let stage = resource(&template, "WebSocketStage");
    // DefaultRouteSettings ($default, every frame), then $connect.
    assert!(stage.iter().any(|l| l.trim() == "$connect:"), "$connect has its own settings");
    let [message, connect] = throttles(&stage)[..] else {
        panic!("WebSocketStage: expected the default and $connect's settings");
    };
    let http_api = resource(&template, "HttpApi");
    // DefaultRouteSettings, then the two routes, keyed as the HTTP API names them.
    let http = throttles(&http_api);
    assert_eq!(http.len(), 3, "{http:?}");
    let routes = resource(&template, "HttpFunction");
    for (i, (method, path)) in [("POST", "/api/ticket"), ("POST", "/api/pair")].into_iter().enumerate() {
        let key = format!("\"{method} {path}\":");
        let at = http_api.iter().position(|l| l.trim() == key).unwrap_or_else(|| panic!("no {key}"));
        assert!(http_api[at + 1].contains("ThrottlingBurstLimit") || http_api[at + 2].contains("ThrottlingBurstLimit"));
        assert!(values(&routes, "Path").contains(&path) && values(&routes, "Method").contains(&method));
        let (burst, rate) = http[i + 1];
        assert!(burst < message.0 && rate < message.1, "{key} {burst}/{rate} vs the message route's {message:?}");
    }
    assert!(connect.0 < message.0 && connect.1 < message.1, "$connect {connect:?} vs {message:?}");
    assert!(http[0].0 < message.0 && http[0].1 < message.1, "HTTP API default {:?}", http[0]);
}

/// `const CSP: &str = "…";` of the embedded host (local/src/host.rs), with
/// Rust's `\`-newline continuations joined.
fn embedded_csp() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../local/src/host.rs");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let start = source
        .find("const CSP: &str = \"")
        .expect("local/src/host.rs defines `const CSP: &str`")
        + "const CSP: &str = \"".len();
    let literal = &source[start..start + source[start..].find("\";").expect("the end of CSP")];
    let mut joined = String::new();
    let mut lines = literal.lines().peekable();
    while let Some(line) = lines.next() {
        match line.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                if let Some(next) = lines.peek_mut() {
                    *next = next.trim_start();
                }
            }
            None => joined.push_str(line),
        }
    }
    joined
}

#[test]
fn the_ui_has_the_embedded_hosts_csp_and_paths() {
    let template = template();
    let function = resource(&template, "UiResponseFunction");
    let csp_line = function
        .iter()
        .find_map(|l| l.trim().strip_prefix("var CSP = \""))
        .and_then(|l| l.strip_suffix("\";"))
        .expect("UiResponseFunction defines var CSP");
    assert_eq!(csp_line, embedded_csp(), "the CSP differs from the embedded host's");
    let code = function.join("\n");
    // connect-src: the page's own host (wss only: viewers come over HTTPS).
    assert!(code.contains("\"'self' wss://\" + host"), "{code}");
    assert!(!code.contains("ws: wss:"));
    assert!(!resource(&template, "UiHeadersPolicy").iter().any(|l| l.contains("ContentSecurityPolicy")));

    let distribution = resource(&template, "Distribution");
    assert_eq!(values(&distribution, "DefaultRootObject"), ["index.html"]);
    // No rewrite of other paths to index.html.
    assert_eq!(values(&distribution, "EventType"), ["viewer-response"]);
    // A missing file is S3's 404 (it needs ListBucket to say so), never a
    // distribution-wide error page that would also rewrite the APIs' answers.
    assert!(!distribution.iter().any(|l| l.contains("CustomErrorResponses")));
    let policy = resource(&template, "UiBucketPolicy");
    assert!(values(&policy, "Action").contains(&"s3:ListBucket"));
}
