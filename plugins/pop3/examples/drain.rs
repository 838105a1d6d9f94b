//! Drains a mailbox with the `pop3` source into an in-process `TestHost` and prints the wall
//! time; `bench/drain-vs-fetchmail.sh` runs it against fetchmail.
//!
//! usage: drain SERVER TLS USER PASSWORD EXPECTED [CA_FILE]
//!
//! `DRAIN_EXTRA_CONFIG` is appended to the source's config (e.g. `max_messages_per_session = 100`).
//!
//! The time runs from the source's start until it has returned after the last QUIT (so every
//! DELE is committed). The host's durable queue is not in the loop: `TestHost` keeps alerts in
//! memory (and scans them for duplicate keys on every submit).

use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{kit::Setup, kit::Source as _, testing::TestHost};
use alertbridge_pop3::source::Pop3Source;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, tls, user, password, expected, rest @ ..] = args.as_slice() else {
        return Err("usage: drain SERVER TLS USER PASSWORD EXPECTED [CA_FILE]".into());
    };
    let expected: u64 = expected.parse().map_err(|e| format!("EXPECTED: {e}"))?;
    let state = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = rest
        .first()
        .map(|c| format!("ca_file = \"{c}\"\n"))
        .unwrap_or_default();
    let config_toml = format!(
        "server = \"{server}\"\ntls = \"{tls}\"\nusername = \"{user}\"\npassword = \"{password}\"\n{ca}\
         state_dir = \"{}\"\npoll_interval_ms = 50\n{}\n",
        state.path().display(),
        std::env::var("DRAIN_EXTRA_CONFIG").unwrap_or_default()
    );
    // One worker thread, like the plugin kit gives a source by default.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let host = TestHost::new("bench");
        let setup = Setup {
            instance: "bench".into(),
            kind: "pop3".into(),
            config_toml,
            host: host.host(),
        };
        let source = Arc::new(Pop3Source::new(setup).map_err(|e| e.message)?);
        let (ctx, stop) = host.source_context();
        let start = Instant::now();
        let task = tokio::spawn(Arc::clone(&source).run(ctx));
        while source.counters().alerts.load(Ordering::Relaxed) < expected {
            if start.elapsed() > Duration::from_secs(600) {
                return Err(format!("timed out; health: {}", source.health()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Stop: the session in flight sends its DELEs and QUIT before `run` returns.
        stop.cancel();
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)?;
        let elapsed = start.elapsed();
        let accepted = host.accepted();
        let keys: HashSet<_> = accepted
            .iter()
            .filter_map(|a| a.dedup_key.clone())
            .collect();
        if accepted.len() as u64 != expected || keys.len() != accepted.len() {
            return Err(format!(
                "expected {expected} distinct alerts, got {} ({} keys)",
                accepted.len(),
                keys.len()
            ));
        }
        println!("{:.3}", elapsed.as_secs_f64());
        eprintln!(
            "drained {} alerts in {:.3} s ({} sessions)",
            accepted.len(),
            elapsed.as_secs_f64(),
            source.counters().sessions.load(Ordering::Relaxed)
        );
        Ok(())
    })
}
