//! Throughput of the `ucma` sink against the in-process bridge simulator on loopback: deliveries
//! one request per recipient vs batched, and presence queries in batches. Prints a table.
//!
//! Run: `cargo bench -p alertbridge-ucma --bench throughput`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    DeliveryStatus, Message, PluginError, Severity,
    kit::{Setup, Sink as _},
    testing::TestHost,
};
use alertbridge_testbed::ucma_sim::{Availability, SimConfig, Simulator};
use alertbridge_ucma::sink::UcmaSink;

const SECRET: &str = "0123456789abcdef-bench";

fn sink(url: &str, extra: &str) -> Result<UcmaSink, PluginError> {
    let config_toml = format!("endpoint = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}");
    UcmaSink::new(Setup {
        instance: "bench".into(),
        kind: "ucma".into(),
        config_toml,
        host: TestHost::new("bench").host(),
    })
}

fn users(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("sip:user{i:04}@contoso.com"))
        .collect()
}

/// Delivers `alerts` alerts of `recipients` recipients each, `parallel` at a time; returns
/// elapsed time.
async fn deliveries(
    sink: Arc<UcmaSink>,
    alerts: u64,
    recipients: &[String],
    parallel: u64,
) -> Duration {
    let started = Instant::now();
    let mut next = 0;
    while next < alerts {
        let batch: Vec<_> = (next..(next + parallel).min(alerts))
            .map(|id| {
                let sink = Arc::clone(&sink);
                let message = Message {
                    alert_id: id,
                    attempt: 1,
                    subject: format!("alert {id}"),
                    severity: Severity::HIGH,
                    recipients: recipients.to_vec(),
                    ..Message::default()
                };
                tokio::spawn(async move { sink.deliver(message).await })
            })
            .collect();
        for job in batch {
            let results = job.await.expect("join").expect("deliver");
            assert!(
                results
                    .iter()
                    .all(|r| r.status == DeliveryStatus::DELIVERED),
                "{results:?}"
            );
        }
        next += parallel;
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let all = users(500);
    let config = all.iter().fold(SimConfig::new(SECRET), |c, u| {
        c.user(u, Availability::Online)
    });
    let sim = Simulator::start(config).await.expect("simulator");
    let url = sim.url();
    println!("| case | work | elapsed | rate |");
    println!("|---|---|---|---|");
    for (label, extra, recipients, parallel) in [
        ("deliver, 1 recipient, sequential", "", 1, 1),
        ("deliver, 10 recipients, one request each", "", 10, 1),
        (
            "deliver, 10 recipients, one batched request",
            "max_recipients_per_message = 10",
            10,
            1,
        ),
        ("deliver, 1 recipient, 16 alerts in parallel", "", 1, 16),
    ] {
        let sink = Arc::new(sink(&url, extra).expect("config"));
        let alerts = 400;
        let elapsed = deliveries(sink, alerts, &all[..recipients], parallel).await;
        let ims = alerts * recipients as u64;
        println!(
            "| {label} | {ims} IMs | {elapsed:.2?} | {:.0} IM/s |",
            ims as f64 / elapsed.as_secs_f64()
        );
    }
    for batch in [100, 500] {
        let sink = sink(&url, &format!("presence_batch_size = {batch}")).expect("config");
        let rounds = 50;
        let started = Instant::now();
        for _ in 0..rounds {
            let presence = sink.presence(all.clone()).await.expect("presence");
            assert_eq!(presence.len(), all.len());
        }
        let elapsed = started.elapsed();
        let lookups = rounds * all.len();
        println!(
            "| presence of 500 users, batches of {batch} | {lookups} look-ups | {elapsed:.2?} | {:.0} look-ups/s |",
            lookups as f64 / elapsed.as_secs_f64()
        );
    }
}
