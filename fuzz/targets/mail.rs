//! Fuzz target `mail`: a raw mail as RETR delivers it → the alert (plugins/pop3/src/mail.rs):
//! MIME structure, charsets and transfer encodings, HTML bodies, `<alert>` documents in the body
//! or in XML parts.
//!
//! Input: the mail's bytes. `alert_from_mail` promises never to fail; it catches a panic of the
//! MIME parser, but afl's panic hook aborts on every panic, caught or not, so the fuzzer still
//! reports one. Besides that, the target checks the promises the source relies on.

use alertbridge_pop3::mail::{MAX_BODY_CHARS, MailOptions, alert_from_mail};

pub fn run(data: &[u8]) {
    let options = MailOptions {
        label_headers: vec!["X-Priority".to_owned(), "X-Alert-Host".to_owned()],
    };
    let m = alert_from_mail(data, &options);
    // The body is cut at MAX_BODY_CHARS (and marked with one `…`).
    assert!(
        m.alert.body.chars().count() <= MAX_BODY_CHARS + 1,
        "body of {} characters",
        m.alert.body.chars().count()
    );
    // A problem is also a label, so routes and people see it.
    if let Some(problem) = &m.problem {
        assert_eq!(m.alert.labels.get("mail.problem"), Some(problem));
    }
    // The same mail gives the same alert (the dedup key and the routes depend on it).
    assert_eq!(alert_from_mail(data, &options), m);
}
