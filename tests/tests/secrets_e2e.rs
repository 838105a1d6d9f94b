//! Issue 11 §5: a secret never appears in output. A recognisable secret is planted in every
//! secret-bearing key of every plugin (pop3 `password`, webhook `tokens`, ucwa `password`, ucma
//! `secret`) and of the host (`admin_token`), through every source — inline, `*_file`, `*_env`,
//! a value of the wrong type, a TOML line cut short, bytes that are not UTF-8 — and the output
//! of `alertbridge check`, the log of `alertbridge run` (talking to real Dovecot and the UCWA and
//! UCMA simulators, which refuse the planted credentials), the admin API's answers and the
//! reload answers (`POST /-/reload` and SIGHUP) are searched for it.
//!
//! Needs Dovecot (`scripts/dovecot.sh env DIR`, as `scripts/test` runs it).

use std::{
    ffi::OsString,
    fs,
    os::unix::ffi::OsStringExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use alertbridge_testbed::{
    harness::{bin_dir, free_port, request},
    ucma_sim, ucwa_sim,
};

/// The planted secret: long and printable enough for every key that has rules.
const PLANTED: &str = "PLANTEDs3cret-Qx7v-0042";
/// What is searched for: the secret, a part of it, and the planted number.
const NEEDLES: [&str; 3] = [PLANTED, "s3cret-Qx7v", "9173570110257"];
const NUMBER: &str = "9173570110257";

fn assert_clean(what: &str, text: &str) {
    for needle in NEEDLES {
        let shown: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        assert!(
            shown.is_empty(),
            "{what} shows the planted secret ({needle}):\n{}",
            shown.join("\n")
        );
    }
}

/// Where a plugin's secret is, and the rest of its config.
struct Plugin {
    table: &'static str,
    name: &'static str,
    plugin: &'static str,
    key: &'static str,
    rest: String,
}

fn plugins(pop3: &str, ucwa_url: &str, ucma_url: &str, hook_port: u16) -> Vec<Plugin> {
    vec![
        Plugin {
            table: "source",
            name: "mail",
            plugin: "pop3",
            key: "password",
            rest: format!(
                "server = \"{pop3}\"\ntls = \"none\"\nusername = \"secrets-test-nobody\"\nstate_dir = \"{{dir}}/pop3-state\"\nmax_backoff_ms = 1000\n"
            ),
        },
        Plugin {
            table: "source",
            name: "hook",
            plugin: "webhook",
            key: "tokens",
            rest: format!("listen = \"127.0.0.1:{hook_port}\"\n"),
        },
        Plugin {
            table: "sink",
            name: "lync",
            plugin: "ucwa",
            key: "password",
            rest: format!(
                "autodiscover_url = \"{ucwa_url}\"\nallow_http = true\nusername = \"alerts@contoso.com\"\n"
            ),
        },
        Plugin {
            table: "sink",
            name: "ocs",
            plugin: "ucma",
            key: "secret",
            rest: format!("endpoint = \"{ucma_url}\"\n"),
        },
    ]
}

/// One way of giving a secret: the config lines (`{key}` and `{dir}` replaced) and the
/// environment (`{key}`-named variables) it needs.
struct Way {
    what: &'static str,
    lines: &'static str,
    env: Option<Vec<u8>>,
    file: Option<Vec<u8>>,
}

fn ways() -> Vec<Way> {
    let mut bad = b"PLANTEDs3cret-Qx7v-\xff\xfe-0042".to_vec();
    bad.push(b'\n');
    vec![
        Way {
            what: "inline",
            lines: "{key} = \"PLANTEDs3cret-Qx7v-0042\"\n",
            env: None,
            file: None,
        },
        Way {
            what: "file",
            lines: "{key}_file = \"{dir}/secret\"\n",
            env: None,
            file: Some(format!("{PLANTED}\n").into_bytes()),
        },
        Way {
            what: "env",
            lines: "{key}_env = \"SECRETS_TEST_VALUE\"\n",
            env: Some(PLANTED.as_bytes().to_vec()),
            file: None,
        },
        Way {
            what: "wrong type (number)",
            lines: "{key} = 9173570110257\n",
            env: None,
            file: None,
        },
        Way {
            what: "wrong type (array)",
            lines: "{key} = [\"PLANTEDs3cret-Qx7v-0042\"]\n",
            env: None,
            file: None,
        },
        Way {
            what: "wrong type (table)",
            lines: "{key} = { PLANTEDs3cret-Qx7v-0042 = 1 }\n",
            env: None,
            file: None,
        },
        Way {
            what: "unquoted",
            lines: "{key} = PLANTEDs3cret-Qx7v-0042\n",
            env: None,
            file: None,
        },
        Way {
            what: "unterminated string",
            lines: "{key} = \"PLANTEDs3cret-Qx7v-0042\n",
            env: None,
            file: None,
        },
        Way {
            what: "two sources at once",
            lines: "{key} = \"PLANTEDs3cret-Qx7v-0042\"\n{key}_env = \"SECRETS_TEST_VALUE\"\n",
            env: Some(PLANTED.as_bytes().to_vec()),
            file: None,
        },
        Way {
            what: "env not UTF-8",
            lines: "{key}_env = \"SECRETS_TEST_VALUE\"\n",
            env: Some(bad[..bad.len() - 1].to_vec()),
            file: None,
        },
        Way {
            what: "file not UTF-8",
            lines: "{key}_file = \"{dir}/secret\"\n",
            env: None,
            file: Some(bad),
        },
        Way {
            what: "wrong type (number) for the file",
            lines: "{key}_file = 9173570110257\n",
            env: None,
            file: None,
        },
    ]
}

fn base_config(dir: &Path, admin: u16, host_lines: &str, blocks: &str) -> String {
    let d = dir.display();
    format!(
        r#"[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
{host_lines}
[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 100
retry_max_ms = 500
max_attempts = 3

{blocks}
[groups]
ops = ["sip:alice@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["lync", "ocs"]
"#
    )
}

fn block(p: &Plugin, secret_lines: &str, dir: &Path) -> String {
    let rest = p.rest.replace("{dir}", &dir.display().to_string());
    format!(
        "[[{t}]]\nname = \"{n}\"\nplugin = \"{pl}\"\n[{t}.config]\n{rest}{secret_lines}\n",
        t = p.table,
        n = p.name,
        pl = p.plugin
    )
}

fn fill(lines: &str, key: &str, dir: &Path) -> String {
    lines
        .replace("{key}", key)
        .replace("{dir}", &dir.display().to_string())
}

fn check(config: &Path, env: Option<&[u8]>) -> (bool, String) {
    let mut cmd = Command::new(bin_dir().join("alertbridge"));
    cmd.arg("check").arg("--config").arg(config);
    cmd.env("RUST_LOG", "trace");
    if let Some(v) = env {
        cmd.env("SECRETS_TEST_VALUE", OsString::from_vec(v.to_vec()));
    }
    let out = cmd.output().expect("run alertbridge check");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn check_never_shows_a_planted_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Nothing listens there: `check` only builds each instance.
    let (hook, ucwa, ucma) = (free_port(), free_port(), free_port());
    let all = plugins(
        "127.0.0.1:1",
        &format!("http://127.0.0.1:{ucwa}"),
        &format!("http://127.0.0.1:{ucma}"),
        hook,
    );
    let good = |p: &Plugin| match p.key {
        "tokens" => "tokens = \"a-good-token\"\n",
        "secret" => "secret = \"another-good-secret-0123\"\n",
        _ => "password = \"a-good-password\"\n",
    };
    let mut checked = 0;
    for target in 0..=all.len() {
        for way in ways() {
            let (host_lines, key) = if target == all.len() {
                // The host's admin token: only `_file` and `_env` exist.
                if !way.lines.contains("_file") && !way.lines.contains("_env") {
                    continue;
                }
                (fill(way.lines, "admin_token", d), "admin_token")
            } else {
                (String::new(), all[target].key)
            };
            let blocks: String = all
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let lines = if i == target {
                        fill(way.lines, key, d)
                    } else {
                        good(p).to_owned()
                    };
                    block(p, &lines, d)
                })
                .collect();
            if let Some(bytes) = &way.file {
                fs::write(d.join("secret"), bytes).unwrap();
            }
            let config = d.join("alertbridge.toml");
            let text = base_config(d, free_port(), &host_lines, &blocks);
            // The line of the planted key (the first line of `way.lines`).
            let first = fill(way.lines.lines().next().unwrap_or_default(), key, d);
            let key_line = text
                .lines()
                .position(|l| l == first)
                .map(|i| i + 1)
                .expect("the key line");
            fs::write(&config, &text).unwrap();
            let (_, out) = check(&config, way.env.as_deref());
            let place = if target == all.len() {
                "host admin_token".to_owned()
            } else {
                format!("{} {}", all[target].plugin, key)
            };
            assert_clean(&format!("`check` ({place}, {})", way.what), &out);
            // The output must still say what is wrong: at the key's line, naming the key.
            // (The webhook takes tokens from several sources at once, by design.)
            let bad = !["inline", "file", "env"].contains(&way.what)
                && (key != "tokens" || way.what != "two sources at once");
            if bad {
                let at = format!("alertbridge.toml:{key_line}:");
                let line = out.lines().find(|l| l.contains(&at)).unwrap_or_else(|| {
                    panic!(
                        "`check` ({place}, {}) reports nothing at {at}:\n{out}",
                        way.what
                    )
                });
                // The key, or the variable or file it names (the line points at the key).
                let named = line.contains(&format!("`{key}"))
                    || line.contains("SECRETS_TEST_VALUE")
                    || line.contains(&format!("{}/secret", d.display()));
                assert!(
                    named,
                    "`check` ({place}, {}) does not name the key: {line}",
                    way.what
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} cases");
}

/// `alertbridge run` with the given environment; its log goes to `log`.
fn spawn_run(config: &Path, log: &Path, env: &[(&str, OsString)]) -> Child {
    Command::new(bin_dir().join("alertbridge"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "debug")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .expect("run alertbridge")
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn run_logs_api_and_reload_answers_never_show_a_planted_secret() {
    let Some(dovecot) = alertbridge_testbed::dovecot::dovecot() else {
        return;
    };
    let pop3 = dovecot.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The simulators know other credentials: every planted one is refused, and logged about.
    let ucwa = rt
        .block_on(ucwa_sim::Simulator::start(ucwa_sim::SimConfig {
            users: vec![
                ucwa_sim::UserSpec::new("alerts@contoso.com", "the-real-password", "Online"),
                ucwa_sim::UserSpec::new("sip:alice@contoso.com", "a", "Online"),
            ],
            ..ucwa_sim::SimConfig::default()
        }))
        .expect("UCWA simulator");
    let ucma = rt
        .block_on(ucma_sim::Simulator::start(
            ucma_sim::SimConfig::new("the-real-bridge-secret-0123")
                .user("sip:alice@contoso.com", ucma_sim::Availability::Online),
        ))
        .expect("UCMA simulator");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (admin, hook) = (free_port(), free_port());
    let all = plugins(&pop3, &ucwa.discover_url(), &ucma.url(), hook);
    fs::write(d.join("tokens"), format!("{PLANTED}\n")).unwrap();
    fs::write(d.join("ucma.secret"), format!("{PLANTED}\n")).unwrap();
    let lines = [
        "password_env = \"SECRETS_TEST_POP3\"\n".to_owned(),
        "tokens_file = \"{dir}/tokens\"\n".replace("{dir}", &d.display().to_string()),
        format!("password = \"{PLANTED}\"\n"),
        "secret_file = \"{dir}/ucma.secret\"\n".replace("{dir}", &d.display().to_string()),
    ];
    let blocks: String = all
        .iter()
        .zip(&lines)
        .map(|(p, l)| block(p, l, d))
        .collect();
    let host_lines = "admin_token_env = \"SECRETS_TEST_ADMIN\"\n";
    let config = d.join("alertbridge.toml");
    fs::write(&config, base_config(d, admin, host_lines, &blocks)).unwrap();
    let log = d.join("host.log");
    let env = [
        ("SECRETS_TEST_POP3", OsString::from(PLANTED)),
        ("SECRETS_TEST_ADMIN", OsString::from(PLANTED)),
    ];
    let mut child = spawn_run(&config, &log, &env);
    let admin_url = format!("http://127.0.0.1:{admin}");
    let auth = format!("Bearer {PLANTED}");
    let mut answers = String::new();
    let mut call = |method: &str, path: &str, body: &str, headers: &[(&str, &str)]| {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{admin_url}{path}")
        };
        let answer = request(method, &url, headers, body);
        answers.push_str(&format!("{method} {path}: {answer:?}\n"));
        answer
    };
    wait_for("the admin API", || {
        call("GET", "/healthz", "", &[]).is_some()
    });
    // The webhook takes the planted token; an alert goes to both sinks, whose logins fail.
    let hook_url = format!("http://127.0.0.1:{hook}/api/v1/alerts");
    wait_for("the webhook", || {
        call(
            "POST",
            &hook_url,
            r#"{"subject": "secrets test"}"#,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
        )
        .is_some_and(|(s, _)| s == 202)
    });
    call(
        "POST",
        &hook_url,
        r#"{"subject": "x"}"#,
        &[
            ("authorization", "Bearer PLANTEDs3cret-Qx7v-0043"),
            ("content-type", "application/json"),
        ],
    );
    let text = || fs::read_to_string(&log).unwrap_or_default();
    wait_for("the pop3 login to fail", || {
        let t = text();
        t.contains("plugin::mail") && (t.contains("ERR") || t.to_lowercase().contains("auth"))
    });
    std::thread::sleep(Duration::from_secs(3));
    for path in [
        "/healthz",
        "/metrics",
        "/api/v1/alerts?limit=10",
        "/api/v1/alerts/1",
    ] {
        call("GET", path, "", &[("authorization", &auth)]);
    }

    // A reload by the API to a config whose secrets are wrong in every way it can be.
    let broken: String = all
        .iter()
        .map(|p| block(p, &format!("{} = {NUMBER}\n", p.key), d))
        .collect();
    fs::write(&config, base_config(d, admin, host_lines, &broken)).unwrap();
    let reload = call("POST", "/-/reload", "", &[("authorization", &auth)]);
    assert!(
        reload
            .as_ref()
            .is_some_and(|(_, body)| body.contains("error") || body.contains("expected")),
        "the reload was not refused with its errors: {reload:?}"
    );
    let unterminated: String = all
        .iter()
        .map(|p| block(p, &format!("{} = \"{PLANTED}\n", p.key), d))
        .collect();
    fs::write(&config, base_config(d, admin, host_lines, &unterminated)).unwrap();
    call("POST", "/-/reload", "", &[("authorization", &auth)]);
    // And by SIGHUP, which answers in the log.
    let before = text().matches("Reload refused").count();
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status();
    wait_for("the SIGHUP reload to be refused", || {
        text().matches("Reload refused").count() > before
    });
    let _ = child.kill();
    let _ = child.wait();
    rt.block_on(ucwa.stop());
    drop(ucma);

    let log = text();
    assert!(
        log.contains("plugin::lync") && log.contains("plugin::ocs"),
        "the sinks did not run:\n{log}"
    );
    assert_clean("the `run` log", &log);
    assert_clean("the admin and webhook answers", &answers);
}
