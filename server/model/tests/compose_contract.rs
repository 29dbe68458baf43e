//! `docker/docker-compose.yml` must speak the service contract: every variable it sets on
//! our services is one the services read, and the names it gives the stack's data (topic,
//! group, database, collection) are the contract's defaults, which is where `wiberctl`
//! looks when it finds a compose-started stack without reading its environment.

use std::collections::BTreeMap;

use wiber_model::contract::{defaults, env, Names, Service};

/// The `x-wiber-env` block: `KEY: value` lines until the next top-level key. A YAML
/// library would be a dependency for six lines; the block is flat by design.
fn wiber_env(compose: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in compose.lines() {
        if line.starts_with("x-wiber-env:") {
            inside = true;
            continue;
        }
        if !inside || line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            break; // the next top-level key
        }
        let (k, v) = line
            .trim()
            .split_once(':')
            .unwrap_or_else(|| panic!("not a KEY: value line in x-wiber-env: {line:?}"));
        out.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    out
}

fn compose() -> String {
    read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docker/docker-compose.yml"
    ))
}

/// The override that swaps in the offline images (and adds their PostgreSQL).
fn compose_offline() -> String {
    read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docker/docker-compose.offline.yml"
    ))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn compose_sets_only_contract_variables_with_contract_names() {
    let vars = wiber_env(&compose());
    assert!(vars.len() >= 6, "x-wiber-env not found or empty: {vars:?}");
    for k in vars.keys() {
        assert!(
            env::ALL.contains(&k.as_str()),
            "docker-compose.yml sets {k}, which no service reads (contract::env::ALL)"
        );
    }
    let names = Names::from_env(
        vars.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    assert_eq!(
        names,
        Names::default(),
        "compose names the stack's data differently from the contract"
    );
    assert_eq!(vars[env::API_PORT], defaults::API_PORT.to_string());
}

/// Every service is labelled, so `wiberctl` finds it in a compose-started stack. The
/// PostgreSQL is the offline override's alone: with Docker Hub, mongo is MongoDB itself.
#[test]
fn compose_labels_every_service_of_the_contract() {
    let (main, offline) = (compose(), compose_offline());
    for s in Service::ALL {
        let label = format!("wiber.service: {}", s.name());
        let (file, text) = match s {
            Service::Postgres => ("docker-compose.offline.yml", &offline),
            _ => ("docker-compose.yml", &main),
        };
        assert!(
            text.contains(&label),
            "{file} has no service labelled {label}"
        );
    }
    assert!(
        !main.contains("wiber.service: postgres"),
        "docker-compose.yml runs the official mongo, which needs no PostgreSQL"
    );
}

/// The check can fail: a misspelt variable in the block is caught.
#[test]
fn a_foreign_variable_is_caught() {
    let bad = "x-wiber-env: &e\n  KAFKA_TOPICS: wiber.messages\nservices:\n";
    let vars = wiber_env(bad);
    assert!(!env::ALL.contains(&vars.keys().next().unwrap().as_str()));
}
