//! Per node, the Wasm or the native build of the filter.
//!
//! An Envoy chooses with node metadata `sluice.filter` (`"wasm"`, the default, or `"native"`;
//! written by `sluice bootstrap --filter`). The snapshot is translated once with the Wasm filter;
//! for a node that wants the native build, [`for_node`] swaps two resources in that node's copy:
//!
//! ```text
//!  ECDS "sluice": Wasm { plugin config = BytesValue(policy) }
//!        ─► DynamicModuleFilter { module (search path or file), filter_name "sluice",
//!                                 filter_config = the same BytesValue(policy) }
//!  LDS  "sluice_http": HTTP filter "sluice" discovers type Wasm ─► type DynamicModuleFilter
//! ```
//!
//! Same resource names, same policy bytes, so each node's snapshot stays consistent and both
//! builds see the identical policy. The native module's counters go to the `wasmcustom` stats
//! namespace, so the bootstrap's stats tags label both builds' counters alike.

use envoy_types::pb::envoy::config::core::v3::{
    AsyncDataSource, DataSource, TypedExtensionConfig, async_data_source, data_source,
};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::dynamic_modules::v3::DynamicModuleConfig;
use envoy_types::pb::envoy::extensions::filters::http::dynamic_modules::v3::DynamicModuleFilter;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use envoy_types::pb::google::protobuf::{self as pbuf, Struct, value::Kind};
use prost::{Message, Name};

use super::build::to_any;
use super::{FILTER_CONFIG_NAME, LISTENER_NAME, TranslateOptions, listener_for_node};
use crate::snapshot::{Resource, Snapshot};
use crate::type_url;

/// Node metadata key choosing the filter build: `"wasm"` (default) or `"native"`.
pub const FILTER_METADATA_KEY: &str = "sluice.filter";
/// The module's name on Envoy's search path (`${ENVOY_DYNAMIC_MODULES_SEARCH_PATH}/lib<name>.so`).
pub const NATIVE_MODULE_NAME: &str = "sluice_filter_native";
/// The stats namespace of the native module's counters: the Wasm build's, so both builds'
/// counters have the same names in `/stats` and the same stats tags apply.
pub const NATIVE_METRICS_NAMESPACE: &str = "wasmcustom";

/// Which build of the filter an Envoy runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilterBuild {
    /// `sluice_filter.wasm` in Envoy's V8: sandboxed, any Envoy with V8.
    #[default]
    Wasm,
    /// `libsluice_filter_native.so`, an Envoy dynamic module: fastest, must match the Envoy build
    /// (Envoy 1.40, ABI v0.2.0).
    Native,
}

impl FilterBuild {
    /// The metadata value: `wasm` or `native`.
    pub fn name(self) -> &'static str {
        match self {
            FilterBuild::Wasm => "wasm",
            FilterBuild::Native => "native",
        }
    }

    /// The build a node asks for; an absent, unknown or non-string value means Wasm (logged).
    pub fn for_node(node_metadata: Option<&Struct>) -> Self {
        let value = node_metadata.and_then(|m| m.fields.get(FILTER_METADATA_KEY));
        match value.and_then(|v| v.kind.as_ref()) {
            None => FilterBuild::Wasm,
            Some(Kind::StringValue(s)) if s == "wasm" => FilterBuild::Wasm,
            Some(Kind::StringValue(s)) if s == "native" => FilterBuild::Native,
            Some(other) => {
                tracing::warn!(
                    value = ?other,
                    "node metadata {FILTER_METADATA_KEY}: expected \"wasm\" or \"native\"; using the Wasm filter"
                );
                FilterBuild::Wasm
            }
        }
    }
}

/// Where Envoy loads the native module from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeSource {
    /// `lib<name>.so` on Envoy's `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` (default: the working
    /// directory, then the system's library path).
    SearchPath { name: String },
    /// A file on the Envoy's machine.
    Local { path: String },
}

impl Default for NativeSource {
    fn default() -> Self {
        NativeSource::SearchPath {
            name: NATIVE_MODULE_NAME.to_owned(),
        }
    }
}

/// The snapshot one Envoy receives: `snapshot` with that node's listener (see
/// [`listener_for_node`]) and, if it asks for the native build, the native filter.
pub fn for_node(
    options: &TranslateOptions,
    node_metadata: Option<&Struct>,
    snapshot: &Snapshot,
) -> Snapshot {
    let mut own = snapshot.clone();
    let listener = listener_for_node(options, node_metadata);
    if FilterBuild::for_node(node_metadata) == FilterBuild::Native {
        let native = snapshot
            .get(type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME)
            .and_then(|wasm| native_filter_config(wasm, &options.native));
        match (native, native_listener(&listener)) {
            (Some(filter), Some(listener)) => {
                own.insert(Resource::new(FILTER_CONFIG_NAME, filter));
                own.insert(Resource::new(LISTENER_NAME, listener));
                return own;
            }
            // Only a snapshot this crate did not build can get here.
            _ => tracing::error!(
                "cannot derive the native filter from the snapshot; this node gets the Wasm filter"
            ),
        }
    }
    own.insert(listener);
    own
}

/// The native ECDS resource carrying the same policy bytes as the Wasm one.
fn native_filter_config(wasm: &Resource, source: &NativeSource) -> Option<prost_types::Any> {
    let config = TypedExtensionConfig::decode(wasm.body.value.as_slice()).ok()?;
    let wasm = Wasm::decode(config.typed_config?.value.as_slice()).ok()?;
    let policy = wasm.config?.configuration?;
    Some(to_any(&native_extension_config(policy, source)))
}

/// The ECDS extension config of the native filter with `policy` (a `BytesValue` of the binary
/// policy, passed to the module as raw bytes).
pub fn native_extension_config(policy: pbuf::Any, source: &NativeSource) -> TypedExtensionConfig {
    let (name, module) = match source {
        NativeSource::SearchPath { name } => (name.clone(), None),
        NativeSource::Local { path } => (
            String::new(),
            Some(AsyncDataSource {
                specifier: Some(async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::Filename(path.clone())),
                    ..Default::default()
                })),
            }),
        ),
    };
    let filter = DynamicModuleFilter {
        dynamic_module_config: Some(DynamicModuleConfig {
            name,
            module,
            metrics_namespace: NATIVE_METRICS_NAMESPACE.into(),
            ..Default::default()
        }),
        filter_name: FILTER_CONFIG_NAME.into(),
        filter_config: Some(policy),
        ..Default::default()
    };
    TypedExtensionConfig {
        name: FILTER_CONFIG_NAME.into(),
        typed_config: Some(pbuf::Any {
            type_url: DynamicModuleFilter::type_url(),
            value: filter.encode_to_vec(),
        }),
    }
}

/// `listener` with its Sluice HTTP filter discovering the native filter's type instead.
fn native_listener(listener: &Resource) -> Option<prost_types::Any> {
    let mut decoded = Listener::decode(listener.body.value.as_slice()).ok()?;
    let mut swapped = false;
    for chain in &mut decoded.filter_chains {
        for network_filter in &mut chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &mut network_filter.config_type else {
                continue;
            };
            if any.type_url != HttpConnectionManager::type_url() {
                continue;
            }
            let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).ok()?;
            for http in &mut hcm.http_filters {
                if http.name != FILTER_CONFIG_NAME {
                    continue;
                }
                if let Some(http_filter::ConfigType::ConfigDiscovery(discovery)) =
                    &mut http.config_type
                {
                    discovery.type_urls = vec![DynamicModuleFilter::type_url()];
                    swapped = true;
                }
            }
            any.value = hcm.encode_to_vec();
        }
    }
    swapped.then(|| to_any(&decoded))
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::{BytesValue, Value};

    use super::super::check_consistent;
    use super::super::tests::{decoded, demo, options};
    use super::*;
    use crate::translate::translate;

    fn metadata(build: &str) -> Struct {
        Struct {
            fields: [(
                FILTER_METADATA_KEY.to_string(),
                Value {
                    kind: Some(Kind::StringValue(build.into())),
                },
            )]
            .into(),
        }
    }

    fn discovered_type(snapshot: &Snapshot) -> Vec<String> {
        let listener: Listener = decoded(snapshot, type_url::LISTENER, LISTENER_NAME);
        let Some(filter::ConfigType::TypedConfig(any)) =
            &listener.filter_chains[0].filters[0].config_type
        else {
            panic!("no HCM");
        };
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("HCM");
        let sluice = hcm
            .http_filters
            .iter()
            .find(|f| f.name == FILTER_CONFIG_NAME)
            .expect("sluice filter");
        let Some(http_filter::ConfigType::ConfigDiscovery(discovery)) = &sluice.config_type else {
            panic!("sluice filter is not discovered");
        };
        discovery.type_urls.clone()
    }

    fn wasm_policy(snapshot: &Snapshot) -> pbuf::Any {
        let config: TypedExtensionConfig =
            decoded(snapshot, type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME);
        let wasm =
            Wasm::decode(config.typed_config.expect("typed").value.as_slice()).expect("Wasm");
        wasm.config.expect("plugin").configuration.expect("policy")
    }

    #[test]
    fn native_node_gets_the_dynamic_module_with_the_same_policy_bytes() {
        let mut options = options();
        let snapshot = translate(&demo(), &options).expect("translates");
        for (source, want_name, want_file) in [
            (NativeSource::default(), NATIVE_MODULE_NAME, None),
            (
                NativeSource::Local {
                    path: "/opt/sluice/libsluice_filter_native.so".into(),
                },
                "",
                Some("/opt/sluice/libsluice_filter_native.so"),
            ),
        ] {
            options.native = source;
            let own = for_node(&options, Some(&metadata("native")), &snapshot);
            check_consistent(&own).expect("the node's snapshot is consistent");
            assert_eq!(discovered_type(&own), [DynamicModuleFilter::type_url()]);

            let config: TypedExtensionConfig =
                decoded(&own, type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME);
            let typed = config.typed_config.expect("typed");
            assert_eq!(typed.type_url, DynamicModuleFilter::type_url());
            let filter = DynamicModuleFilter::decode(typed.value.as_slice()).expect("decodes");
            assert_eq!(filter.filter_name, FILTER_CONFIG_NAME);
            let module = filter.dynamic_module_config.expect("module config");
            assert_eq!(module.name, want_name);
            assert_eq!(module.metrics_namespace, "wasmcustom");
            let file = module.module.and_then(|m| match m.specifier {
                Some(async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::Filename(f)),
                    ..
                })) => Some(f),
                _ => None,
            });
            assert_eq!(file.as_deref(), want_file);
            // The very bytes the Wasm build gets, a BytesValue of the binary policy.
            let policy = filter.filter_config.expect("policy");
            assert_eq!(policy, wasm_policy(&snapshot));
            assert_eq!(policy.type_url, BytesValue::type_url());
            // Weights in the routes for the native build too: without the bucket header it
            // would split with the policy's weights, which the control plane leaves at 0.
            let bytes = BytesValue::decode(policy.value.as_slice()).expect("bytes value");
            let policy =
                sluice_proto::v1::FilterPolicy::decode(bytes.value.as_slice()).expect("policy");
            assert_eq!(policy.bucket_header, crate::translate::BUCKET_HEADER);
        }
    }

    #[test]
    fn wasm_is_the_default_and_unknown_values_fall_back_to_it() {
        let options = options();
        let snapshot = translate(&demo(), &options).expect("translates");
        for node in [None, Some(metadata("wasm")), Some(metadata("lua"))] {
            let own = for_node(&options, node.as_ref(), &snapshot);
            check_consistent(&own).expect("consistent");
            assert_eq!(discovered_type(&own), [Wasm::type_url()], "{node:?}");
            assert_eq!(
                own.get(type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME)
                    .map(|r| r.body.clone()),
                snapshot
                    .get(type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME)
                    .map(|r| r.body.clone())
            );
        }
        assert_eq!(
            FilterBuild::for_node(Some(&metadata("native"))),
            FilterBuild::Native
        );
        assert_eq!(FilterBuild::for_node(None), FilterBuild::Wasm);
    }
}
