//! Message template benchmark: what rendering one message costs (both forms, plain and HTML)
//! against the built-in default, for a one-alert template, a digest listing 200 alerts, a
//! hostile 64 KiB alert text (cut at 16 KiB) and a template that runs out of fuel.
//!
//! `cargo bench -p alertbridge --bench templates` (no plugins needed). Prints a table.

use std::time::Instant;

use alertbridge::{
    model::StoredAlert,
    template::{Context, Owner, Templates},
};
use alertbridge_plugin_api::{Alert, Severity};

/// The same allocator as the `alertbridge` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ONE: &str =
    "[{{ severity | upper }}] {{ subject }}{% if labels.host %} on {{ labels.host }}{% endif %}
{{ text | truncate(500) }}
{% if incident %}{{ reply_hint }}{% endif %}
{{ alert_url }}";

const DIGEST: &str = "{{ subject }}
{% for a in alerts %}- {{ a.labels.host }}: {{ a.subject }} {{ a.url }}
{% endfor %}{% if more %}(+{{ more }} more){% endif %}";

const RUNAWAY: &str = "{% for i in range(100000) %}{% endfor %}";

fn alert(i: u64, body: String) -> StoredAlert {
    let mut a = Alert::new(format!("Disk full on web{i:03}"));
    a.body = body;
    a.severity = Severity::HIGH;
    a.labels.insert("host".into(), format!("web{i:03}"));
    a.labels.insert("alertname".into(), "DiskFull".into());
    StoredAlert::new(i, "monitoring", a, 1_796_119_200_000)
}

/// Microseconds per render (best of 5 runs of `n`), and the plain text's length.
fn time(t: &Templates, ctx: &Context, n: u32) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut len = 0;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            len = std::hint::black_box(t.render("r", "lync", ctx)).text.len();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    (best, len)
}

fn main() {
    let compile = |source: &str| {
        Templates::compile(
            vec![(Owner::Route("r".into()), source.into())],
            "https://alertbridge.contoso.com",
        )
        .expect("the bench templates compile")
    };
    let one = alert(1, "/var at 98%".into());
    let many: Vec<StoredAlert> = (0..1_500).map(|i| alert(i, "/var at 98%".into())).collect();
    let refs: Vec<&StoredAlert> = many.iter().collect();
    let hostile = alert(2, "<script>".repeat(8 * 1024));
    let rows: Vec<(&str, Templates, Context, u32)> = vec![
        (
            "built-in default",
            Templates::default(),
            Context::alert(&one),
            100_000,
        ),
        ("one alert", compile(ONE), Context::alert(&one), 10_000),
        (
            "digest, 1500 alerts (200 listed)",
            compile(DIGEST),
            Context::group("[FIRING ×1500] DiskFull", "", &refs),
            200,
        ),
        (
            "64 KiB hostile text, cut",
            compile("{{ text }}"),
            Context::alert(&hostile),
            1_000,
        ),
        (
            "runaway loop, out of fuel",
            compile(RUNAWAY),
            Context::alert(&one),
            100,
        ),
    ];
    println!(
        "{:<34} {:>12} {:>12}",
        "template", "µs/message", "text bytes"
    );
    // What every deliver call pays, template or not: the context of its alert.
    let start = Instant::now();
    for _ in 0..100_000 {
        std::hint::black_box(Context::alert(std::hint::black_box(&one)));
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / 100_000.0;
    println!("{:<34} {us:>12.1} {:>12}", "(one alert's context)", "-");
    for (name, t, ctx, n) in rows {
        let (us, len) = time(&t, &ctx, n);
        println!("{name:<34} {us:>12.1} {len:>12}");
    }
}
