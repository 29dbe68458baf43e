//! The one place where adapters are put behind the services: the API's router gets the
//! Kafka publisher and the store's reads, the consumer loop gets the group and the store.
//! Everything above the seams ([`crate::api`], [`crate::consumer`]) and below them
//! ([`crate::kafka`], [`crate::store`], [`crate::sql_reads`]) is built without the other;
//! this module, which the command line ([`crate::cli`]) calls, knows both.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, AppState, Limits, ReadStore};
use crate::config::{instance_name, ApiConfig, ConsumerConfig};
use crate::consumer::{consume, Batching, Recovery};
use crate::kafka::{self, Publisher};
use crate::sql_reads::SqlReads;
use crate::store::Store;

/// The API's producer settings, from its configuration.
fn publisher_batching(cfg: &ApiConfig) -> kafka::Batching {
    kafka::Batching {
        linger_ms: cfg.linger_ms,
        max_in_flight: cfg.max_in_flight,
        prompt_max_rate: cfg.prompt_max_rate,
        acks: cfg.acks,
    }
}

/// Runs the API until `shutdown` resolves, then drains in-flight requests and flushes
/// the producer (both bounded).
pub async fn run_api(
    cfg: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // First, before any connection: a seeded bug that cannot be honoured is a start error.
    #[cfg(not(feature = "seeded-bugs"))]
    crate::config::refuse_seeded_bug()?;
    #[cfg(feature = "seeded-bugs")]
    let seeded = crate::seeded::Seeded::from_env(wiber_model::contract::Service::Api)?;
    let instance = instance_name("api");
    let publisher = Publisher::new(&cfg.kafka, cfg.message_timeout(), publisher_batching(&cfg))?;
    let store = Store::connect(&cfg.mongo).await?;
    // Set but empty reads through MONGO_URI too: how an operator switches a stack's SQL
    // reads off (`stack up --service-env WIBER_STORE_SQL_URL=`).
    let reads: Arc<dyn ReadStore> = match cfg.store_sql_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Arc::new(SqlReads::new(url, &cfg.mongo, store)?),
        None => Arc::new(store),
    };
    // Topics are ensured in the background: the API serves liveness at once and
    // readiness tells when Kafka is there. Indexes belong to the consumers (the writers).
    {
        let kafka_cfg = cfg.kafka.clone();
        tokio::spawn(async move {
            kafka::ensure_topics_until(&kafka_cfg, std::future::pending()).await;
        });
    }
    let state = AppState::new(Arc::new(publisher.clone()), reads, cfg.kafka.topic.as_str())
        .with_limits(Limits::from(&cfg));
    #[cfg(feature = "seeded-bugs")]
    let state = match &seeded {
        Some(s) => s.api(state),
        None => state,
    };
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (is another process using the port? set API_PORT)"
        )
    })?;
    tracing::info!(%instance, %addr, max_concurrent = cfg.max_concurrent, "api listening");
    api::serve(listener, state, shutdown).await?;
    publisher.flush(Duration::from_secs(5));
    tracing::info!(%instance, "api stopped");
    Ok(())
}

/// Runs the consumer until `shutdown` resolves: connects to MongoDB and Kafka (waiting
/// for them), joins the group and runs [`consume`].
pub async fn run_consumer(
    cfg: ConsumerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    // First, before any connection: a seeded bug that cannot be honoured is a start error.
    #[cfg(not(feature = "seeded-bugs"))]
    crate::config::refuse_seeded_bug()?;
    #[cfg(feature = "seeded-bugs")]
    let seeded = crate::seeded::Seeded::from_env(wiber_model::contract::Service::Consumer)?;
    let instance = instance_name("consumer");
    let store = Store::connect(&cfg.mongo).await?;
    // Indexes and topics are retried until they work: a consumer started before its
    // dependencies (compose, restarts) waits for them instead of crash-looping.
    let mut backoff = Duration::from_millis(200);
    loop {
        match store.ensure_indexes().await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "mongodb not ready yet; retrying"),
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    if !kafka::ensure_topics_until(&cfg.kafka, &mut shutdown).await {
        return Ok(());
    }
    let records = kafka::GroupRecords::subscribe(&cfg, &instance)?;
    tracing::info!(%instance, group = %cfg.group, topic = %cfg.kafka.topic, "consumer started");
    let recovery = Recovery::from(&cfg);
    #[cfg(feature = "seeded-bugs")]
    let recovery = match &seeded {
        Some(s) => s.recovery(recovery),
        None => recovery,
    };
    #[cfg(feature = "seeded-bugs")]
    let store =
        crate::seeded::SeededStore::new(seeded.as_ref(), &store, &records, &cfg.kafka.topic);
    consume(&records, &store, Batching::from(&cfg), &recovery, shutdown).await;
    tracing::info!(%instance, "consumer stopped");
    Ok(())
}
