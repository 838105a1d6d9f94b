//! The root module's entry points, generic over the plugin that `export_plugin!` describes.

#![allow(unsafe_code)] // The one place the library header is built.

use abi_stable::{
    library::{__call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult},
    prefix_type::PrefixTypeTrait,
    std_types::{RErr, RResult, RStr},
};

use super::{Host, Setup, guard, log};
use crate::{
    API_VERSION, ErrorKind, FfiError, KindInfo, PluginError, PluginInfo, Role,
    abi::{HostBox, PluginMod, PluginModRef, SinkBox, SourceBox},
};

/// A plugin as `export_plugin!` describes it.
pub trait PluginSpec: 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    fn kinds() -> Vec<(&'static str, Role)>;
    fn create_source(kind: &str, setup: Setup) -> Option<Result<SourceBox, PluginError>>;
    fn create_sink(kind: &str, setup: Setup) -> Option<Result<SinkBox, PluginError>>;
}

/// The library header for plugin `P`, exported by `export_plugin!`.
pub const fn lib_header<P: PluginSpec>() -> LibHeader {
    // SAFETY: `erased::<P>` returns the root module of type `PluginModRef`, as the header says.
    unsafe { LibHeader::from_constructor::<PluginModRef>(erased::<P>, CheckTypeLayout::Yes) }
}

extern "C" fn erased<P: PluginSpec>() -> RootModuleResult {
    __call_root_module_loader(root_module::<P>)
}

fn root_module<P: PluginSpec>() -> PluginModRef {
    PluginMod {
        info: info::<P>,
        create_source: create_source::<P>,
        create_sink: create_sink::<P>,
    }
    .leak_into_prefix()
}

extern "C" fn info<P: PluginSpec>() -> PluginInfo {
    let kinds = guard::guard("info", || RResult::ROk(P::kinds())).unwrap_or_default();
    PluginInfo {
        name: P::NAME.into(),
        version: P::VERSION.into(),
        api_version: API_VERSION.into(),
        kinds: kinds
            .into_iter()
            .map(|(name, role)| KindInfo {
                name: name.into(),
                role,
                attributes: Default::default(),
            })
            .collect(),
        attributes: Default::default(),
    }
}

fn setup(kind: RStr<'_>, instance: RStr<'_>, config_toml: RStr<'_>, host: HostBox) -> Setup {
    Setup {
        instance: instance.to_string(),
        kind: kind.to_string(),
        config_toml: config_toml.to_string(),
        host: Host::new(host),
    }
}

fn create<B>(
    role: Role,
    kind: RStr<'_>,
    instance: RStr<'_>,
    config_toml: RStr<'_>,
    host: HostBox,
    make: fn(&str, Setup) -> Option<Result<B, PluginError>>,
) -> RResult<B, FfiError> {
    log::install(&host);
    let raw = host.clone();
    log::with_host(&raw, || {
        guard::guard("create", || {
            let setup = setup(kind, instance, config_toml, host);
            match make(kind.as_str(), setup) {
                Some(Ok(b)) => RResult::ROk(b),
                Some(Err(e)) => RErr(e.into()),
                None => RErr(FfiError::new(
                    ErrorKind::CONFIG,
                    format!("this plugin provides no {role} kind `{kind}`"),
                )),
            }
        })
    })
}

extern "C" fn create_source<P: PluginSpec>(
    kind: RStr<'_>,
    instance: RStr<'_>,
    config_toml: RStr<'_>,
    host: HostBox,
) -> RResult<SourceBox, FfiError> {
    create(
        Role::SOURCE,
        kind,
        instance,
        config_toml,
        host,
        P::create_source,
    )
}

extern "C" fn create_sink<P: PluginSpec>(
    kind: RStr<'_>,
    instance: RStr<'_>,
    config_toml: RStr<'_>,
    host: HostBox,
) -> RResult<SinkBox, FfiError> {
    create(
        Role::SINK,
        kind,
        instance,
        config_toml,
        host,
        P::create_sink,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_macro_uses_the_loader_symbol_name() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
