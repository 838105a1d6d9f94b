//! Replays the saved inputs of the webhook plugin targets (see common/mod.rs).

mod common;

#[path = "../targets/webhook_json.rs"]
mod webhook_json;

#[path = "../targets/webhook_xml.rs"]
mod webhook_xml;

#[path = "../targets/alertmanager.rs"]
mod alertmanager;

#[test]
fn webhook_json_corpus() {
    common::replay("webhook_json", webhook_json::run);
}

#[test]
fn webhook_xml_corpus() {
    common::replay("webhook_xml", webhook_xml::run);
}

#[test]
fn alertmanager_corpus() {
    common::replay("alertmanager", alertmanager::run);
}
