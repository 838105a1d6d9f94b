//! Routing benchmark: the cost of planning one alert against the number of recipients it
//! reaches (a route with a large group plus the users the alert names, through two sinks), and
//! of encoding its record as the queue saves it. Linear routing shows a flat cost per target.
//! Then the per-recipient rate map: waves of a million new recipients a minute apart keep its
//! memory at one wave's worth (recipients idle for a minute are dropped and their room reused).
//!
//! `cargo bench -p alertbridge --bench routing` (no plugins needed). Prints tables.

use std::{collections::BTreeMap, time::Instant};

use alertbridge::{
    dispatch::RecipientRate,
    model::{Outcome, RecipientRecord, StoredAlert},
    router::{Matcher, OfflinePolicy, Route, Router},
};
use alertbridge_plugin_api::Alert;

/// The same allocator as the `alertbridge` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn router(group: usize) -> Router {
    let route = Route {
        name: "all".into(),
        matcher: Matcher::default(),
        groups: vec!["big".into()],
        users: vec![],
        sinks: vec!["lync".into(), "ocs".into()],
        cont: false,
        allow_alert_recipients: true,
        offline: OfflinePolicy::Skip,
        unknown_presence: Default::default(),
        grouping: None,
    };
    let members = (0..group)
        .map(|i| format!("sip:member{i}@contoso.com"))
        .collect();
    Router {
        routes: vec![route],
        groups: BTreeMap::from([("big".to_owned(), members)]),
        ..Router::default()
    }
}

fn main() {
    println!("recipients  targets   plan ms   ns/target   record KB   encode ms");
    for n in [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000] {
        // Half from the group, half named in the alert (each named twice: repeats cost a lookup).
        let r = router(n / 2);
        let mut alert = Alert::new("bench");
        alert.users = (0..n)
            .map(|i| format!("sip:named{}@contoso.com", i % (n / 2)))
            .collect();
        let stored = StoredAlert::new(1, "hook", alert, 0);
        let runs = 5;
        let mut best = f64::MAX;
        let mut targets = 0;
        for _ in 0..runs {
            let start = Instant::now();
            let plan = r.plan(&stored);
            best = best.min(start.elapsed().as_secs_f64());
            targets = plan.len();
        }
        let mut routed = stored.clone();
        routed.recipients = r
            .plan(&stored)
            .into_iter()
            .map(|(t, _)| RecipientRecord {
                route: t.route,
                sink: t.sink,
                user: t.user,
                outcome: Outcome::Pending,
                reason: String::new(),
                attempts: 0,
                held_since_ms: None,
                not_before_ms: None,
                updated_ms: 0,
                sending: false,
                repeat: false,
                digest: None,
                silence: None,
            })
            .collect();
        let start = Instant::now();
        let json = serde_json::to_vec(&routed).expect("encode");
        let encode = start.elapsed().as_secs_f64();
        println!(
            "{n:>10} {targets:>8} {:>9.2} {:>11.0} {:>11.0} {:>11.2}",
            best * 1e3,
            best * 1e9 / targets as f64,
            json.len() as f64 / 1024.0,
            encode * 1e3,
        );
    }

    println!();
    println!("rate map: waves of messages to 1,000,000 new recipients each, a minute apart");
    let rate = RecipientRate::new();
    let before = rss_mib();
    for wave in 0..4 {
        let t0 = 1_000_000 + wave * 61_000;
        for i in 0..1_000_000 {
            rate.check(&format!("sip:w{wave}u{i}@contoso.com"), t0 + i / 1000, 30);
        }
        println!(
            "  after wave {}: {:>8} recipients remembered, RSS +{:.0} MiB",
            wave + 1,
            rate.len(),
            rss_mib() - before
        );
    }
    // A minute after the last wave, the next message drops every idle recipient.
    rate.check("sip:live@contoso.com", 1_000_000 + 4 * 61_000 + 60_000, 30);
    println!("  a minute after the last wave: {} remembered", rate.len());
}
