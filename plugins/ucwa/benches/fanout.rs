//! Fan-out benchmark: one message to 2,000 recipients, all online, in the in-process UCWA
//! simulator. Prints how long until the last IM arrived, per concurrency cap (the default,
//! 64, first). Run: `cargo bench -p alertbridge-ucwa --bench fanout`.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use alertbridge_plugin_api::{
    DeliveryStatus, Message,
    kit::{CancellationToken, Setup, Sink},
    testing::TestHost,
};
use alertbridge_testbed::ucwa_sim::{SimConfig, Simulator, UserSpec};
use alertbridge_ucwa::UcwaSink;

const RECIPIENTS: usize = 2_000;
const ROUNDS: usize = 3;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Times `ROUNDS` deliveries with a sink whose cap is `cap` (`None`: the default).
async fn measure(cap: Option<usize>) -> Vec<(Duration, Duration, usize)> {
    let mut users = vec![UserSpec::new("alerts@contoso.com", "pw", "Online")];
    users.extend(
        (0..RECIPIENTS).map(|i| UserSpec::new(&format!("u{i:04}@contoso.com"), "x", "Online")),
    );
    let sim = Simulator::start(SimConfig {
        users,
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator");
    let mut config_toml = format!(
        "autodiscover_url = \"{}\"\nallow_http = true\nusername = \"alerts@contoso.com\"\npassword = \"pw\"\n",
        sim.discover_url()
    );
    if let Some(cap) = cap {
        config_toml.push_str(&format!("max_concurrent_conversations = {cap}\n"));
    }
    let setup = Setup {
        instance: "bench".into(),
        kind: "ucwa".into(),
        config_toml,
        host: TestHost::new("bench").host(),
    };
    let sink = Arc::new(UcwaSink::new(setup).expect("valid config"));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sink.clone().run(shutdown.clone()));
    // Sign in before timing.
    let warm = sink
        .presence(vec!["sip:u0000@contoso.com".into()])
        .await
        .expect("signed in");
    assert_eq!(warm.len(), 1);
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let message = Message {
            subject: format!("fan-out round {round}"),
            body: "Disk full on db01".into(),
            recipients: (0..RECIPIENTS)
                .map(|i| format!("sip:u{i:04}@contoso.com"))
                .collect(),
            ..Message::default()
        };
        let before = sim.received_count();
        let (start, start_ms) = (Instant::now(), unix_ms());
        let results = sink.deliver(message).await.expect("deliver");
        let returned = start.elapsed();
        let delivered = results
            .iter()
            .filter(|r| r.status == DeliveryStatus::DELIVERED)
            .count();
        let last_ms = sim
            .all_received()
            .values()
            .flatten()
            .map(|m| m.at_unix_ms)
            .max()
            .unwrap_or(start_ms);
        assert_eq!(
            sim.received_count() - before,
            delivered,
            "every delivered IM arrived"
        );
        rows.push((
            Duration::from_millis(last_ms.saturating_sub(start_ms)),
            returned,
            delivered,
        ));
    }
    shutdown.cancel();
    let _ = run.await;
    rows
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| cap | round | recipients | delivered | last IM arrived | deliver returned |");
    println!("|----:|------:|-----------:|----------:|----------------:|-----------------:|");
    for cap in [None, Some(16), Some(256)] {
        let rows = runtime.block_on(measure(cap));
        for (round, (last, returned, delivered)) in rows.iter().enumerate() {
            let cap = cap.map_or_else(|| "64 (default)".to_owned(), |c| c.to_string());
            println!(
                "| {cap} | {round} | {RECIPIENTS} | {delivered} | {:.0} ms | {:.0} ms |",
                last.as_secs_f64() * 1000.0,
                returned.as_secs_f64() * 1000.0
            );
        }
    }
}
