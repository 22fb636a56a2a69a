//! The contract between the Kubernetes manifests and a service binary
//! ([`check_deploy_contract`]).

use std::path::PathBuf;

/// The repository root (the directory holding `deploy/`), found from the
/// calling crate's manifest directory.
fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("deploy").is_dir() {
        assert!(
            dir.pop(),
            "no deploy/ directory above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    dir
}

/// Asserts that the Kubernetes manifests and the binary agree, so neither
/// can drift from the other:
/// - every variable `deploy/env-contract.yaml` gives the service (serving,
///   and its `migrate` containers) is one the binary reads, and every
///   variable the binary requires is given to both;
/// - the serving container does not get the migration URL (the schema
///   owner's credentials), and the `migrate` containers do;
/// - every value in the base ConfigMap (`deploy/k8s/base/<svc>/config.env`)
///   parses with the binary's own parser;
/// - the listen port in that ConfigMap is the Deployment's `grpc`
///   containerPort and the port of its gRPC probes, and the probes ask for
///   `health_service` (or the whole server).
pub fn check_deploy_contract(service: &str, command: clap::Command, health_service: &str) {
    use serde_norway::Value;
    let root = repo_root();
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };

    // 1. Variable names, both ways.
    let contract: Value = serde_norway::from_str(&read(root.join("deploy/env-contract.yaml")))
        .expect("contract YAML");
    let names = |list: &Value, what: &str| -> Vec<String> {
        list.as_sequence()
            .unwrap_or_else(|| panic!("env-contract.yaml has no {service}.{what}"))
            .iter()
            .map(|v| v.as_str().expect("variable names are strings").to_owned())
            .collect()
    };
    let configmap = names(&contract[service]["configmap"], "configmap");
    let provided: Vec<String> = configmap
        .iter()
        .cloned()
        .chain(names(&contract[service]["secret"], "secret"))
        .collect();
    let migrate_provided: Vec<String> = configmap
        .iter()
        .cloned()
        .chain(names(
            &contract[service]["migrate"]["secret"],
            "migrate.secret",
        ))
        .collect();
    let args: Vec<(String, clap::Arg)> = command
        .get_arguments()
        .filter_map(|arg| Some((arg.get_env()?.to_str()?.to_owned(), arg.clone())))
        .collect();
    for (container, given) in [("serve", &provided), ("migrate", &migrate_provided)] {
        for name in given {
            assert!(
                args.iter().any(|(env, _)| env == name),
                "deploy gives {service} ({container}) {name}, which the binary does not read"
            );
        }
        for (env, arg) in &args {
            if arg.is_required_set() {
                assert!(
                    given.contains(env),
                    "the binary requires {env}, which deploy does not give {service} ({container})"
                );
            }
        }
    }
    const MIGRATION_URL: &str = "BACKROOM_MIGRATION_DATABASE_URL";
    assert!(
        !provided.iter().any(|name| name == MIGRATION_URL),
        "{service} would serve holding {MIGRATION_URL}, the schema owner's credentials"
    );
    assert!(
        migrate_provided.iter().any(|name| name == MIGRATION_URL),
        "{service}'s migrate containers do not get {MIGRATION_URL}"
    );

    // 2. Every ConfigMap value parses with the binary's parser.
    let config_env = read(root.join(format!("deploy/k8s/base/{service}/config.env")));
    let mut argv = vec![service.to_owned()];
    let mut listen_port = None;
    for line in config_env
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.split_once('=').expect("NAME=value lines");
        let (_, arg) = args
            .iter()
            .find(|(env, _)| env == name)
            .unwrap_or_else(|| panic!("config.env sets {name}, which {service} does not read"));
        let long = arg
            .get_long()
            .expect("every env-backed flag has a long name");
        argv.push(format!("--{long}={value}"));
        if name == "BACKROOM_LISTEN_ADDR" {
            listen_port = value.rsplit(':').next().and_then(|p| p.parse::<u64>().ok());
        }
    }
    // Required secrets get placeholders: only the ConfigMap values are checked.
    for (env, arg) in &args {
        if arg.is_required_set() && !config_env.contains(&format!("{env}=")) {
            argv.push(format!(
                "--{}=placeholder",
                arg.get_long().expect("long name")
            ));
        }
    }
    if let Err(err) = command.clone().try_get_matches_from(&argv) {
        panic!("the base ConfigMap of {service} does not parse: {err}");
    }

    // 3. Ports and probes.
    let listen_port = listen_port.expect("config.env sets BACKROOM_LISTEN_ADDR");
    let deployment: Value = serde_norway::from_str(&read(
        root.join(format!("deploy/k8s/base/{service}/deployment.yaml")),
    ))
    .expect("deployment YAML");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    let container = containers
        .iter()
        .find(|c| c["name"].as_str() == Some(service))
        .unwrap_or_else(|| panic!("no container named {service}"));
    let grpc_port = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("grpc"))
        .and_then(|p| p["containerPort"].as_u64())
        .expect("a containerPort named grpc");
    assert_eq!(
        grpc_port, listen_port,
        "containerPort grpc vs BACKROOM_LISTEN_ADDR"
    );
    let mut grpc_probes = 0;
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let grpc = &container[probe]["grpc"];
        if grpc.is_null() {
            continue;
        }
        grpc_probes += 1;
        assert_eq!(grpc["port"].as_u64(), Some(listen_port), "{probe} port");
        let asked = grpc["service"].as_str().unwrap_or("");
        assert!(
            asked.is_empty() || asked == health_service,
            "{probe} asks for {asked:?}, the server reports {health_service:?}"
        );
    }
    assert!(
        grpc_probes >= 2,
        "readiness and startup use native gRPC probes"
    );
}
