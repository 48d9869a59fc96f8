//! A host process for the multi-instance PostgreSQL test: the real
//! component in the real host, against its own local token endpoint,
//! writing events to the database named by its first argument.
//!
//! `event-writer DATABASE_URL REFRESHES` acquires once, force-refreshes
//! REFRESHES times (one event each), flushes, and prints its counters as
//! JSON on stdout.

use anyhow::Context;
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::{DatabaseUrl, EventStore, TokenManager};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: event-writer DATABASE_URL REFRESHES";
    let database = DatabaseUrl::parse(&args.next().context(usage)?)?;
    let refreshes: usize = args.next().context(usage)?.parse().context(usage)?;
    let endpoint = TokenEndpoint::start(EndpointConfig::default()).await?;
    let events = EventStore::open(database);
    let manager = TokenManager::new(
        token_e2e::runtime(),
        token_e2e::settings_for(&endpoint),
        events.clone(),
    )
    .await?;
    manager.get_token().await.context("first token")?;
    for i in 0..refreshes {
        manager
            .force_refresh()
            .await
            .with_context(|| format!("refresh {i}"))?;
    }
    let waiting = events.flush();
    println!(
        "{}",
        serde_json::json!({
            "written": events.stats().written(),
            "waiting": waiting,
            "dropped": events.stats().dropped(),
            "server_requests": endpoint.request_count(),
        })
    );
    Ok(())
}
