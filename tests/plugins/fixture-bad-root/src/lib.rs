//! A loader-test fixture: a plugin file whose root module returns an error, or panics when
//! `ALERTBRIDGE_FIXTURE_ROOT=panic`. The host must refuse it in one line and load the rest.

#![allow(unsafe_code, non_local_definitions)]

use abi_stable::{export_root_module, std_types::RBoxError};
use alertbridge_plugin_api::abi::PluginModRef;

#[export_root_module]
fn root() -> Result<PluginModRef, RBoxError> {
    if std::env::var("ALERTBRIDGE_FIXTURE_ROOT").as_deref() == Ok("panic") {
        panic!("fixture: root module panics on purpose");
    }
    Err(RBoxError::from_fmt(
        &"fixture: root module fails on purpose",
    ))
}
