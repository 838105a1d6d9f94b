//! A loader-test fixture: a plugin file built against another version of the plugin API —
//! same root module name, an older version number and a shorter table. The host must refuse it
//! in one line (never a layout dump) and load the rest.

#![allow(unsafe_code, non_local_definitions)]

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, std_types::RString, StableAbi,
};

/// The root module as an imagined API 0.0.9 had it.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    #[sabi(last_prefix_field)]
    pub info: extern "C" fn() -> RString,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "alertbridge_plugin";
    const NAME: &'static str = "alertbridge plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.0.9");
}

extern "C" fn info() -> RString {
    "old".into()
}

#[export_root_module]
fn root() -> PluginModRef {
    PluginMod { info }.leak_into_prefix()
}
