//! What the sink's constructor refuses, each error naming its key.

use alertbridge_plugin_api::ErrorKind;

use super::{SECRET, new_sink};

fn refused(config: &str) -> String {
    let e = new_sink(config).expect_err("config must be refused");
    assert_eq!(e.kind, ErrorKind::CONFIG, "{e}");
    // The key travels as data; the error's text shows it as "`key`: message".
    e.to_string()
}

#[test]
fn plain_http_to_a_remote_bridge_is_refused_unless_allowed() {
    let remote =
        format!("endpoint = \"http://ucma-bridge.contoso.com:8080\"\nsecret = \"{SECRET}\"\n");
    let message = refused(&remote);
    assert!(
        message.starts_with("`endpoint`: plain http://"),
        "{message}"
    );
    assert!(message.contains("allow_insecure_http = true"), "{message}");
    // Allowed, the secret would still cross the network in clear as a bearer: refused too.
    let message = refused(&format!("{remote}allow_insecure_http = true\n"));
    assert!(
        message.starts_with(
            "`sign_requests`: plain http:// to `ucma-bridge.contoso.com`, which is not loopback, would send the secret in clear"
        ),
        "{message}"
    );
    assert!(
        new_sink(&format!(
            "{remote}allow_insecure_http = true\nsign_requests = true\n"
        ))
        .is_ok()
    );
    assert!(
        new_sink(&format!(
            "endpoint = \"https://ucma-bridge.contoso.com:8443\"\nsecret = \"{SECRET}\"\n"
        ))
        .is_ok()
    );
    assert!(
        new_sink(&format!(
            "endpoint = \"http://127.0.0.1:8080\"\nsecret = \"{SECRET}\"\n"
        ))
        .is_ok()
    );
}

#[test]
fn exactly_one_good_secret_is_required() {
    let endpoint = "endpoint = \"https://bridge.contoso.com\"\n";
    assert!(refused(endpoint).starts_with("`secret`: set exactly one"));
    let both = format!("{endpoint}secret = \"{SECRET}\"\nsecret_env = \"X\"\n");
    assert!(refused(&both).starts_with("`secret`: set exactly one"));
    assert!(
        refused(&format!("{endpoint}secret = \"short\"\n"))
            .starts_with("`secret`: the secret must be")
    );
    let missing = format!("{endpoint}secret_env = \"ALERTBRIDGE_UCMA_TEST_UNSET_VARIABLE\"\n");
    assert!(refused(&missing).starts_with("`secret_env`: environment variable"));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ucma.secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    assert!(
        new_sink(&format!(
            "{endpoint}secret_file = {:?}\n",
            path.display().to_string()
        ))
        .is_ok()
    );
    let absent = format!(
        "{endpoint}secret_file = {:?}\n",
        dir.path().join("nope").display().to_string()
    );
    assert!(refused(&absent).starts_with("`secret_file`: "));
}

#[test]
fn a_secret_is_never_echoed() {
    let endpoint = "endpoint = \"https://bridge.contoso.com\"\n";
    // A mistyped number, a too-short string and a non-printable one: none appears in the error.
    for (line, planted) in [
        ("secret = 98765432109876543210\n", "98765432109876543210"),
        ("secret = \"PLANTED-short\"\n", "PLANTED-short"),
        (
            "secret = \"PLANTED secret with spaces\"\n",
            "PLANTED secret",
        ),
    ] {
        let message = refused(&format!("{endpoint}{line}"));
        assert!(message.starts_with("`secret`"), "{message}");
        assert!(!message.contains(planted), "{message}");
    }
    let sink = new_sink(&format!(
        "{endpoint}secret = \"PLANTED-0123456789abcdef\"\n"
    ))
    .expect("good secret");
    let debug = format!("{sink:?}");
    assert!(!debug.contains("PLANTED"), "{debug}");
    assert!(debug.contains("Secret(..)"), "{debug}");
}

#[test]
fn limits_timeouts_and_unknown_keys_are_checked() {
    let base = format!("endpoint = \"https://bridge.contoso.com\"\nsecret = \"{SECRET}\"\n");
    assert!(
        refused(&format!("{base}presence_batch_size = 501\n"))
            .starts_with("`presence_batch_size`: 501 is outside 1..=500")
    );
    assert!(
        refused(&format!("{base}max_recipients_per_message = 0\n"))
            .starts_with("`max_recipients_per_message`")
    );
    let timeouts = format!("{base}send_timeout_ms = 30000\nrequest_timeout_ms = 30000\n");
    assert!(refused(&timeouts).starts_with("`request_timeout_ms`: must be longer"));
    assert!(refused(&format!("{base}colour = \"blue\"\n")).starts_with("`colour`: unknown field"));
    assert!(
        refused(&format!("{base}client_cert_file = \"/x.pem\"\n"))
            .starts_with("`client_key_file`: required")
    );
    assert!(refused(&format!("{base}mode = \"fax\"\n")).starts_with("`mode`: unknown variant"));
}
