//! A plugin file as built against an imagined plugin API 2.0: the same root module name as
//! 1.x, major version 2 and a different table. A 1.x host refuses it in one line naming both
//! versions, before looking at its table.

#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, std_types::RString, StableAbi,
};

/// The root module as an imagined API 2.0 has it.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    #[sabi(last_prefix_field)]
    pub describe: extern "C" fn() -> RString,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "alertbridge_plugin";
    const NAME: &'static str = "alertbridge plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("2.0.0");
}

extern "C" fn describe() -> RString {
    "built for plugin API 2.0".into()
}

#[export_root_module]
fn root() -> PluginModRef {
    PluginMod { describe }.leak_into_prefix()
}
