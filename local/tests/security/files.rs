//! Files the host writes, and what the page may load or talk to.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tether_testsupport::helpers::{Mode, Server};
use tether_testsupport::security::raw_http::request;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The data directory holds secret hashes and every conversation: 0700, the
/// database files 0600, also when the directory already existed with a
/// looser mode (as the suite's helper makes it: `create_dir_all`, 0755).
#[tokio::test]
async fn the_data_directory_and_the_database_are_private() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let user = server.add_user("ada").await;
    // A write, so the WAL exists.
    server.ticket(&user).await;
    let dir = server.data_dir();
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("list the data directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with("tether.db") {
            seen += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(seen >= 2, "the database and its WAL: {seen} files");
}

/// The page may connect to its own origin only (its websocket included),
/// load scripts from itself only, and be framed by nobody.
#[tokio::test]
async fn the_page_talks_to_its_own_origin_only() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let res = request(server.addr, "GET", "/", &[], "").await;
    assert_eq!(res.status, 200);
    let csp = res.header("content-security-policy").expect("a CSP header");
    let directive = |name: &str| -> Vec<String> {
        csp.split(';')
            .map(str::trim)
            .find(|d| d.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {csp}"))
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    let host = server.addr.to_string();
    assert_eq!(
        directive("connect-src"),
        ["'self'".to_owned(), format!("ws://{host}"), format!("wss://{host}")],
        "{csp}"
    );
    assert_eq!(directive("script-src"), ["'self'"], "{csp}");
    assert_eq!(directive("frame-ancestors"), ["'none'"], "{csp}");
    assert_eq!(directive("object-src"), ["'none'"], "{csp}");
    // No directive allows every host.
    for bad in [" * ", " ws: ", " wss: ", " http: ", " https: "] {
        assert!(!format!(" {csp} ").replace(';', " ").contains(bad), "{bad} in {csp}");
    }
}
