//! What each container of a stack is made of: image, command, environment (from the
//! service contract), published ports, volumes, healthcheck, labels and network alias.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use wiber_model::contract::{env, Names};

use super::images::ImageFlavor;
use super::{
    service_env_label, Config, DockerStack, API_PORT, HEALTH_INTERVAL_S, HOST_NETWORK,
    KAFKA_CLUSTER_ID, KAFKA_EXTERNAL_PORT, LABEL_INSTANCE, LABEL_PROJECT, LABEL_SERVICE,
    LABEL_SERVICE_ENV, MONGO_PORT, POSTGRES_PORT, STOP_TIMEOUT_SECS,
};
use crate::runtime::{Cluster, InstanceId, Service, ServiceEnv, POSTGRES_USER};

impl DockerStack {
    /// The container of one instance, as `up` creates it.
    pub(super) async fn container_body(
        &self,
        cfg: &Config,
        id: &InstanceId,
    ) -> ContainerCreateBody {
        let images = &cfg.images;
        let spec = &cfg.spec;
        let mut env: Vec<String> = Vec::new();
        let mut cmd: Option<Vec<String>> = None;
        let mut ports: Vec<(u16, u16)> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let mut healthcheck: Option<HealthConfig> = None;
        let mut network = Network::Project;
        let mut stop_signal: Option<String> = None;
        let image;
        match id.service {
            Service::Kafka => {
                image = images.kafka.clone();
                let host_port = cfg.broker_ports[id.index as usize - 1];
                env.extend(kafka_env(
                    id.index,
                    spec.cluster,
                    host_port,
                    spec.partitions,
                ));
                ports.push((KAFKA_EXTERNAL_PORT, host_port));
                binds.push(format!(
                    "{}:/var/lib/kafka/data",
                    self.broker_volume(id.index)
                ));
                healthcheck = Some(if self.image_has_healthcheck(&image).await {
                    // wiber-kafka's own probe (raw ApiVersions, no JVM), at our interval.
                    interval_only()
                } else {
                    // apache/kafka defines none: the tool compose uses too.
                    health(
                        &["CMD-SHELL", "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092 >/dev/null 2>&1"],
                        HEALTH_INTERVAL_S,
                        20,
                        60,
                        12,
                    )
                });
            }
            Service::Postgres => {
                // Only the offline flavour has one (`up` asks for it only then).
                image = images.postgres.clone().unwrap_or_default();
                ports.push((POSTGRES_PORT, spec.ports.postgres));
                env.push(format!("POSTGRES_USER={POSTGRES_USER}"));
                env.push(format!(
                    "WIBER_POSTGRES_DB={}",
                    crate::pg::FERRETDB_DATABASE
                ));
                binds.push(format!(
                    "{}:/var/lib/postgresql/data",
                    self.volume_name("postgres")
                ));
                // SIGTERM is PostgreSQL's *smart* shutdown, which waits for FerretDB's
                // pooled connections to go away (until the engine's SIGKILL); SIGINT is
                // the fast one: sessions end, a checkpoint is written, it exits.
                stop_signal = Some("SIGINT".into());
                // wiber-postgres's own probe (pg_isready on TCP, which it opens only
                // after the setup), at our interval.
                healthcheck = Some(interval_only());
            }
            Service::Mongo => {
                image = images.mongo.clone();
                ports.push((MONGO_PORT, spec.ports.mongo));
                match images.flavor {
                    ImageFlavor::Offline => {
                        cmd = Some(vec![
                            "--handler=postgresql".into(),
                            format!(
                                "--postgresql-url=postgres://{POSTGRES_USER}@postgres:{POSTGRES_PORT}/{}",
                                crate::pg::FERRETDB_DATABASE
                            ),
                            "--listen-addr=:27017".into(),
                            crate::runtime::FERRETDB_INSERT_BATCH_FLAG.into(),
                        ]);
                        env.extend(
                            ["FERRETDB_STATE_DIR=/state", "FERRETDB_TELEMETRY=disable"]
                                .map(String::from),
                        );
                        // FerretDB's own state (no data: that is in PostgreSQL).
                        binds.push(format!("{}:/state", self.volume_name("mongo")));
                    }
                    ImageFlavor::Official => {
                        // A one-member replica set, so `w: majority` means something; the
                        // healthcheck initiates it on first start (as in the compose file).
                        cmd = Some(vec![
                            "--replSet".into(),
                            "rs0".into(),
                            "--bind_ip_all".into(),
                        ]);
                        binds.push(format!("{}:/data/db", self.volume_name("mongo")));
                    }
                }
                healthcheck = Some(if self.image_has_healthcheck(&image).await {
                    interval_only()
                } else {
                    health(
                        &[
                            "CMD",
                            "mongosh",
                            "--quiet",
                            "--eval",
                            "try { rs.status() } catch (e) { rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'mongo:27017'}]}) }; \
                             quit(db.hello().isWritablePrimary ? 0 : 1)",
                        ],
                        HEALTH_INTERVAL_S,
                        10,
                        30,
                        15,
                    )
                });
            }
            Service::Api | Service::Consumer => {
                image = images.server.clone();
                cmd = Some(vec![id.service.name().to_string()]);
                // Unset unless the caller sets it: the services' own default filter
                // (info, with rdkafka and mongodb at warn) is what the local runtime runs
                // with; a bare `info` would let the drivers' chatter into the engine's logs.
                let mut extra: Vec<(String, String)> = std::env::var(env::RUST_LOG)
                    .map(|v| vec![(env::RUST_LOG.to_string(), v)])
                    .unwrap_or_default();
                extra.extend(spec.extra_env.iter().cloned());
                let host_net = id.service == Service::Api;
                let (kafka_bootstrap, mongo_uri, api_listen) = if host_net {
                    // On the host's network the api reaches Kafka and the store as the host
                    // does: through their ports published on 127.0.0.1 (Kafka's external
                    // listener advertises exactly that address).
                    (
                        cfg.host_bootstrap(),
                        format!(
                            "mongodb://127.0.0.1:{}/?directConnection=true",
                            spec.ports.mongo
                        ),
                        ("127.0.0.1", spec.ports.api),
                    )
                } else {
                    // Inside the stack's network, by alias. No replicaSet=: works against
                    // mongo (rs0, discovered) and FerretDB.
                    (
                        cfg.network_bootstrap(),
                        "mongodb://mongo:27017/".to_string(),
                        ("0.0.0.0", API_PORT),
                    )
                };
                let vars = ServiceEnv {
                    id: *id,
                    kafka_bootstrap: &kafka_bootstrap,
                    mongo_uri: &mongo_uri,
                    // The api is on the host's network: postgres through its published port.
                    store_sql_url: (host_net && images.postgres.is_some())
                        .then(|| crate::runtime::postgres_url(spec.ports.postgres))
                        .as_deref(),
                    names: &Names::default(),
                    partitions: spec.partitions,
                    cluster: spec.cluster,
                    api_listen,
                    extra: &extra,
                }
                .vars();
                env.extend(vars.into_iter().map(|(k, v)| format!("{k}={v}")));
                if host_net {
                    network = Network::Host;
                    // The server image has no curl: a raw HTTP/1.0 GET over bash's /dev/tcp.
                    let probe = format!(
                        "exec 3<>/dev/tcp/127.0.0.1/{} && printf 'GET /health/readiness HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '",
                        spec.ports.api
                    );
                    healthcheck = Some(health(
                        &["CMD", "bash", "-c", &probe],
                        HEALTH_INTERVAL_S,
                        5,
                        30,
                        10,
                    ));
                }
            }
        }
        let mut labels = HashMap::from([
            (LABEL_PROJECT.to_string(), self.project.clone()),
            (LABEL_SERVICE.to_string(), id.service.name().to_string()),
            (LABEL_INSTANCE.to_string(), id.index.to_string()),
        ]);
        if matches!(id.service, Service::Api | Service::Consumer) {
            labels.insert(
                LABEL_SERVICE_ENV.to_string(),
                service_env_label(&spec.extra_env),
            );
        }
        let (network_mode, port_bindings, exposed_ports, networking_config) = match network {
            // Nothing to publish or attach: the process listens on the host itself.
            Network::Host => (HOST_NETWORK.to_string(), None, None, None),
            Network::Project => {
                let bindings: HashMap<String, Option<Vec<PortBinding>>> = ports
                    .iter()
                    .map(|(inner, host)| {
                        (
                            format!("{inner}/tcp"),
                            Some(vec![PortBinding {
                                host_ip: Some("127.0.0.1".into()),
                                host_port: Some(host.to_string()),
                            }]),
                        )
                    })
                    .collect();
                let endpoint = EndpointSettings {
                    aliases: Some(super::aliases(id)),
                    ..Default::default()
                };
                (
                    self.network_name(),
                    Some(bindings),
                    Some(
                        ports
                            .iter()
                            .map(|(inner, _)| format!("{inner}/tcp"))
                            .collect(),
                    ),
                    Some(bollard::models::NetworkingConfig {
                        endpoints_config: Some(HashMap::from([(self.network_name(), endpoint)])),
                    }),
                )
            }
        };
        ContainerCreateBody {
            image: Some(image),
            cmd,
            env: Some(env),
            labels: Some(labels),
            healthcheck,
            exposed_ports,
            stop_signal,
            stop_timeout: Some(i64::from(STOP_TIMEOUT_SECS)),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings,
                network_mode: Some(network_mode),
                // Note: the engine treats `docker kill` as a manual stop, so a killed
                // container is not restarted by this policy; chaos starts it explicitly.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }
}

/// Where a container's network lives.
enum Network {
    /// The project's bridge network, reached by alias; ports published on 127.0.0.1.
    Project,
    /// The host's network namespace (the api): see [`HOST_NETWORK`].
    Host,
}

/// The broker's settings: the compose file's, plus what the local runtime's broker runs
/// with (`kafka_properties` and the JVM flags in `runtime/local.rs`), so both runtimes
/// measure the same broker, plus what the cluster's shape decides ([`Cluster`]). The
/// offline image reads the same variables as `apache/kafka`.
fn kafka_env(node: u32, cluster: Cluster, host_port: u16, partitions: u32) -> Vec<String> {
    let me = super::broker_host(node, cluster.brokers);
    let voters = if cluster.brokers == 1 {
        // localhost, not kafka: the controller must reach itself even while a fault
        // test has disconnected the container from the network.
        "1@localhost:9093".to_string()
    } else {
        // Every broker votes, by the alias each is reached at.
        cluster.quorum_voters(|n| super::broker_host(n, cluster.brokers), 9093)
    };
    let mut vars: Vec<(String, String)> = [
        ("KAFKA_NODE_ID", node.to_string()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
        (
            "KAFKA_LISTENERS",
            format!("PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:{KAFKA_EXTERNAL_PORT}"),
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://{me}:9092,EXTERNAL://127.0.0.1:{host_port}"),
        ),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT".into(),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
        ("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT".into()),
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", voters),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
        // As the local broker: 10 offsets partitions (not 50) for one small group, and
        // the stack's partition count as the broker default.
        ("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "10".into()),
        ("KAFKA_NUM_PARTITIONS", partitions.to_string()),
        // Topics are created by the services with their own settings.
        ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false".into()),
        ("KAFKA_LOG_DIRS", "/var/lib/kafka/data".into()),
        ("CLUSTER_ID", KAFKA_CLUSTER_ID.into()),
        // The local broker's JVM: 256 MiB to 512 MiB of heap (the image default, 1 GiB
        // fixed, is more than one test broker needs), G1 with 20 ms pause goals.
        ("KAFKA_HEAP_OPTS", "-Xmx512m -Xms256m".into()),
        (
            "KAFKA_JVM_PERFORMANCE_OPTS",
            "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true".into(),
        ),
        // The local broker logs WARN but for the broker's own lifecycle; the image's
        // config keeps kafka.* at INFO (start-up and shutdown lines), the rest follows this.
        ("KAFKA_LOG4J_ROOT_LOGLEVEL", "WARN".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Replication, in-sync minimum and election safety: the cluster's shape decides.
    vars.extend(
        cluster
            .broker_properties()
            .into_iter()
            .map(|(prop, v)| (property_var(prop), v)),
    );
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `min.insync.replicas` -> `KAFKA_MIN_INSYNC_REPLICAS`, as the images read it.
pub(super) fn property_var(prop: &str) -> String {
    format!("KAFKA_{}", prop.replace('.', "_").to_ascii_uppercase())
}

/// The image's own healthcheck at [`HEALTH_INTERVAL_S`]: the engine takes every field
/// left unset (the test, timeout, retries) from the image.
fn interval_only() -> HealthConfig {
    HealthConfig {
        interval: Some(HEALTH_INTERVAL_S * NS),
        ..Default::default()
    }
}

const NS: i64 = 1_000_000_000;

fn health(
    test: &[&str],
    interval_s: i64,
    timeout_s: i64,
    start_s: i64,
    retries: i64,
) -> HealthConfig {
    HealthConfig {
        test: Some(test.iter().map(|s| s.to_string()).collect()),
        interval: Some(interval_s * NS),
        timeout: Some(timeout_s * NS),
        start_period: Some(start_s * NS),
        retries: Some(retries),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_advertises_the_host_port() {
        let env = kafka_env(1, Cluster::default(), 19094, 6);
        assert!(env.contains(
            &"KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://kafka:9092,EXTERNAL://127.0.0.1:19094"
                .to_string()
        ));
        assert!(env.contains(&"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1".to_string()));
    }

    #[test]
    fn a_cluster_node_votes_and_advertises_its_own_alias() {
        let c = Cluster {
            brokers: 3,
            ..Cluster::default()
        };
        let env = kafka_env(2, c, 19095, 6);
        for want in [
            "KAFKA_NODE_ID=2",
            "KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://kafka-2:9092,EXTERNAL://127.0.0.1:19095",
            "KAFKA_CONTROLLER_QUORUM_VOTERS=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093",
            "KAFKA_MIN_INSYNC_REPLICAS=2",
            "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE=false",
            "KAFKA_DEFAULT_REPLICATION_FACTOR=3",
        ] {
            assert!(
                env.contains(&want.to_string()),
                "{want} missing from {env:?}"
            );
        }
    }
}
