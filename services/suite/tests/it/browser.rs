//! A real browser: the machine's headless Chromium (Debian `chromium`,
//! driven by `playwright-core`) loads a page the test serves from an
//! origin of its own on 127.0.0.1, which logs in and places an order
//! through `fetch` (the REST routes, JSON) and lists products through
//! gRPC-Web stubs generated from the protos (`protoc-gen-es` with
//! `connect-web`), all cross-origin, so CORS is exercised as a browser
//! does it. The test asserts what the page shows.
//!
//! The page lives in `tests/browser` (its npm packages are installed, its
//! stubs generated and bundled, by this test). Ignored by `cargo test`
//! (it needs Chromium and npm): `.ci/run` installs both and runs it with
//! `cargo test --workspace -- --ignored browser::`.

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::harness::{PASSWORD, Suite, VISA};

fn page_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `program args` in the page directory; panics with its output when
/// it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(page_dir())
        .output()
        .unwrap_or_else(|err| panic!("{program} {args:?}: {err} (is it installed?)"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn chromium() -> String {
    if let Ok(path) = std::env::var("BACKROOM_CHROMIUM") {
        return path;
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!("no Chromium: install Debian's `chromium` or set BACKROOM_CHROMIUM");
}

/// Serves `index.html` and the bundle on 127.0.0.1:0 until dropped; its
/// origin.
async fn serve_page() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let index = Arc::new(std::fs::read(page_dir().join("index.html")).unwrap());
    let bundle = Arc::new(std::fs::read(page_dir().join("dist/app.js")).unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (index, bundle) = (index.clone(), bundle.clone());
            tokio::spawn(async move {
                let mut head = vec![0; 8192];
                let Ok(read) = stream.read(&mut head).await else {
                    return;
                };
                let request = String::from_utf8_lossy(&head[..read]);
                let path = request.split(' ').nth(1).unwrap_or("/");
                let (kind, body): (&str, &[u8]) = if path.starts_with("/app.js") {
                    ("text/javascript", &bundle)
                } else if path == "/" || path.starts_with("/?") {
                    ("text/html; charset=utf-8", &index)
                } else {
                    ("text/plain", b"not found")
                };
                let status = if kind == "text/plain" {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body).await;
            });
        }
    });
    (origin, task)
}

#[tokio::test]
#[ignore = "needs Chromium and npm; .ci/run runs it"]
async fn a_browser_logs_in_lists_products_over_grpc_web_and_orders_over_json() {
    if !page_dir().join("node_modules").is_dir() {
        run("npm", &["install", "--no-audit", "--no-fund", "--silent"]);
    }
    run("npm", &["run", "--silent", "build"]);
    let (origin, page) = serve_page().await;

    let suite = Suite::spawn_with_cors(std::slice::from_ref(&origin)).await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("browser@example.com", VISA).await;
    let inventory = suite.inventory.lock().await.as_ref().unwrap().endpoint();
    let query = url_query(&[
        ("account", suite.account.endpoint().as_str()),
        ("inventory", inventory.as_str()),
        ("payment", suite.payment.endpoint().as_str()),
        ("email", "browser@example.com"),
        ("password", PASSWORD),
        ("sku", "MUG"),
        ("card", ada.card.as_str()),
        ("address", ada.address.as_str()),
    ]);
    let profile = tempfile_dir();
    let url = format!("{origin}/?{query}");
    let driver = tokio::process::Command::new("node")
        .arg("drive.mjs")
        .arg(&url)
        .arg(chromium())
        .arg(&profile)
        .current_dir(page_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), driver)
        .await
        .expect("the browser finished within 90 s")
        .expect("run node drive.mjs");
    let _ = std::fs::remove_dir_all(&profile);
    page.abort();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the driver failed: {stderr}");
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: {}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    println!("the page showed {shown:#}");
    assert_eq!(shown["status"], "done", "{shown:#}\n{stderr}");
    let log = &shown["log"];
    assert!(
        log["login"].as_str().unwrap().starts_with("logged in"),
        "{log}"
    );
    assert!(
        log["product-MUG"].as_str().unwrap().contains("12.99 EUR"),
        "products through gRPC-Web: {log}"
    );
    let order = log["order"].as_str().unwrap();
    assert!(order.contains("COMPLETED"), "{log}");
    let name = order.split(' ').nth(1).unwrap();
    assert_eq!(
        suite.order(name).await.state,
        backroom_proto::payment::v1::OrderState::Completed as i32
    );
    assert!(
        log["error"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 404 code 5"),
        "{log}"
    );
}

fn url_query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A fresh, empty Chromium profile directory.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backroom-chromium-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
