//! Request bodies → alerts: pure functions over bytes, one module per format, and the error
//! that says precisely what is wrong (which field, which line and column).
//!
//! - [`json`]: our alert as JSON, one object or an array, and [`xml`]: our
//!   `<alert xmlns="urn:alertbridge:alert:1">` document (or several in `<alerts>`). Both are the
//!   kit's alert format parser ([`alertbridge_plugin_api::kit::format`], specified in
//!   `docs/alert-format.md`), the same one the pop3 source and `alertbridge route` use.
//! - [`alertmanager`]: the Prometheus Alertmanager webhook payload version 4, and Grafana's
//!   superset of it (version 1).

pub mod alertmanager;

pub use alertbridge_plugin_api::kit::format::{
    FormatError as PayloadError, Limits, json, line_column, xml,
};

/// The bounds a request body is parsed within: the server's body limit (checked while the body
/// is read as well) and the format's default nesting depth.
pub fn limits(max_body_bytes: usize) -> Limits {
    Limits {
        max_bytes: max_body_bytes,
        ..Limits::DEFAULT
    }
}
