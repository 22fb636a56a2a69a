//! The README's first command: `backroom up` starts its own throwaway
//! Postgres, serves every service with health and reflection, and on ctrl-c
//! stops everything and removes the cluster.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn backroom_up_serves_every_service_and_cleans_up_on_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backroom"))
        .arg("up")
        .env("BACKROOM_BASE_PORT", "0")
        .env_remove("DATABASE_URL")
        .env("BACKROOM_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backroom up");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // The banner lists each service with its address.
    let mut addrs = Vec::new();
    let mut seen = Vec::new();
    while addrs.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.recv())
            .await
            .expect("banner within two minutes")
            .unwrap_or_else(|| panic!("backroom up exited early:\n{}", seen.join("\n")));
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [service @ ("account" | "inventory" | "payment"), addr] = words.as_slice() {
            addrs.push((service.to_string(), addr.to_string()));
        }
        seen.push(line);
    }

    for (service, addr) in &addrs {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{service} at {addr}: {e}"));
        let mut health = HealthClient::new(channel);
        let mut watch = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        loop {
            let status = tokio::time::timeout(Duration::from_secs(30), watch.message())
                .await
                .expect("health within 30 s")
                .unwrap()
                .expect("health stream open")
                .status;
            if status == ServingStatus::Serving as i32 {
                break;
            }
        }
    }

    // ctrl-c: everything stops and the throwaway cluster is removed.
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let mut removed = false;
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(60), lines.recv()).await {
        removed |= line.contains("throwaway cluster removed");
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(removed, "the cluster removal was reported");
}
