//! Replays the saved inputs of the pop3 plugin targets (see common/mod.rs).

mod common;

#[path = "../targets/pop3_reply.rs"]
mod pop3_reply;

#[path = "../targets/mail.rs"]
mod mail;

#[path = "../targets/mail_html.rs"]
mod mail_html;

#[path = "../targets/mail_xml.rs"]
mod mail_xml;

#[path = "../targets/pop3_config.rs"]
mod pop3_config;

#[test]
fn pop3_reply_corpus() {
    common::replay("pop3_reply", pop3_reply::run);
}

#[test]
fn mail_corpus() {
    common::replay("mail", mail::run);
}

#[test]
fn mail_html_corpus() {
    common::replay("mail_html", mail_html::run);
}

#[test]
fn mail_xml_corpus() {
    common::replay("mail_xml", mail_xml::run);
}

#[test]
fn pop3_config_corpus() {
    common::replay("pop3_config", pop3_config::run);
}
