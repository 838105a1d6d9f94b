//! Dedup across hosts: two real hosts on one PostgreSQL, the same dedup key posted to both at
//! the same moment → both answer 202 with the same alert id (one of them as a duplicate), the
//! shared queue holds one alert, and the user gets one IM.

use std::{
    collections::BTreeMap,
    sync::{Arc, Barrier},
};

use alertbridge_plugin_api::REPEAT_MARK;
use alertbridge_testbed::{
    ha::{self, Node, Options},
    postgres::Database,
    servers,
};

/// Keys, each posted to both hosts at once.
const KEYS: usize = 40;

#[test]
fn the_same_dedup_key_posted_to_both_hosts_is_one_alert_and_one_im() {
    let Some(server) = servers::postgres() else {
        return;
    };
    let db = Database::create(&server, "ha_dedup");
    let started = ha::started();
    let dir = ha::Scratch::new();
    let o = Options {
        lease_ms: 2000,
        ..Options::default()
    };
    let a = Node::start(dir.path(), "a", &db.url, &o);
    let b = Node::start(dir.path(), "b", &db.url, &o);

    // Two threads, one per host, released together for every key: the two posts race.
    let gate = Arc::new(Barrier::new(2));
    let post_all = |url: String, gate: Arc<Barrier>| {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = reqwest::Client::new();
            (0..KEYS)
                .map(|i| {
                    let key = format!("dup-{i:03}");
                    gate.wait();
                    let answer = rt
                        .block_on(ha::post(&client, &url, ha::alert_body(&key, ha::OPS)))
                        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
                    assert_eq!(answer.status, 202, "{key} at {url}: {answer:?}");
                    let id = answer.body["ids"][0].as_u64().expect("an id");
                    let duplicate = answer.body["duplicates"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|x| x.as_u64() == Some(id)));
                    (key, (id, duplicate))
                })
                .collect::<BTreeMap<_, _>>()
        })
    };
    let at_a = post_all(a.hook_url(), gate.clone());
    let at_b = post_all(b.hook_url(), gate);
    let (at_a, at_b) = (at_a.join().unwrap(), at_b.join().unwrap());

    let mut receipts = BTreeMap::new();
    let mut taken_by_b = 0;
    for (key, (id_a, dup_a)) in &at_a {
        let (id_b, dup_b) = at_b[key];
        assert_eq!(
            *id_a, id_b,
            "{key}: host a answered alert {id_a}, host b alert {id_b}"
        );
        assert!(
            dup_a ^ dup_b,
            "{key}: exactly one host takes it new, the other answers it as a duplicate (a: {dup_a}, b: {dup_b})"
        );
        taken_by_b += usize::from(!dup_b);
        receipts.insert(key.clone(), *id_a);
    }

    let delivered = ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    ha::wait_idle(&[&a, &b]);
    let delivered_again = ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    assert_eq!(
        (delivered_again.records, delivered_again.marked),
        (KEYS, 0),
        "one IM per key, none marked (no host died): {delivered:?} then {delivered_again:?}"
    );
    // The shared queue, read through either host's admin API, holds one alert per key.
    for node in [&a, &b] {
        let alerts = node.host.all_alerts(&[]);
        let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for alert in &alerts {
            let key = alert["alert"]["dedup_key"].as_str().unwrap_or("");
            per_key
                .entry(key)
                .or_default()
                .push(alert["id"].as_u64().unwrap_or(0));
        }
        assert_eq!(per_key.len(), KEYS, "{}: {per_key:?}", node.name);
        for (key, ids) in per_key {
            assert_eq!(ids, [receipts[key]], "{}: {key}", node.name);
        }
    }
    eprintln!(
        "ha dedup ({:.1?}): {KEYS} keys posted to both hosts at once → {KEYS} alerts ({taken_by_b} taken new by b, the rest by a), \
         {} IMs (a sent {}, b sent {})",
        started.elapsed(),
        delivered_again.records,
        delivered_again.by_node.get("a").unwrap_or(&0),
        delivered_again.by_node.get("b").unwrap_or(&0),
    );
}
