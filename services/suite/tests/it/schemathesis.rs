//! schemathesis (PyPI) against each server's served OpenAPI document, with
//! an admin token: property-based requests for every operation (valid and
//! invalid ones), and no answer may be a 5xx or violate the document's
//! schemas (status codes, content types, bodies); every server still
//! serves afterwards.
//!
//! Ignored by `cargo test` (it needs the `schemathesis` command): `.ci/run`
//! installs it and runs `cargo test --workspace -- --ignored schemathesis::`.
//! `BACKROOM_SCHEMATHESIS` names another command;
//! `BACKROOM_SCHEMATHESIS_EXAMPLES` the examples per operation (default 10).

use std::time::Duration;

use crate::harness::{Suite, VISA};

#[tokio::test]
#[ignore = "needs schemathesis; .ci/run runs it"]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    suite.customer("fuzzed@example.com", VISA).await;
    let inventory = suite.inventory.lock().await.as_ref().unwrap().endpoint();
    let command = std::env::var("BACKROOM_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let examples = std::env::var("BACKROOM_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    // The three at once (each its own schemathesis process): the run takes
    // as long as the slowest, not the sum.
    let runs = [
        ("account", suite.account.endpoint()),
        ("inventory", inventory.clone()),
        ("payment", suite.payment.endpoint()),
    ]
    .map(|(name, endpoint)| {
        let run = tokio::process::Command::new(&command)
            .arg("run")
            .arg(format!("{endpoint}/openapi.json"))
            .arg("--url")
            .arg(&endpoint)
            .args(["--header", &format!("Authorization: Bearer {}", suite.admin)])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", &examples, "--workers", "2", "--seed", "20261203"])
            .args(["--request-timeout", "20"])
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output();
        async move {
            let output = tokio::time::timeout(Duration::from_secs(900), run)
                .await
                .expect("schemathesis finished within 15 minutes")
                .unwrap_or_else(|err| panic!("schemathesis: {err} (pip install schemathesis)"));
            (name, output)
        }
    });
    let mut failed = Vec::new();
    for (name, output) in futures_util::future::join_all(runs).await {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary: Vec<&str> = stdout.lines().rev().take(12).collect();
        println!(
            "schemathesis on {name}:\n{}",
            summary.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        if !output.status.success() {
            failed.push(format!(
                "{name}:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "schemathesis found problems:\n{}",
        failed.join("\n\n")
    );
    // No crash: every server still answers.
    for endpoint in [
        suite.account.endpoint(),
        inventory,
        suite.payment.endpoint(),
    ] {
        let response = reqwest::get(format!("{endpoint}/openapi.json"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{endpoint} stopped serving");
    }
    suite.audit().await;
}
