//! Envoy configs for the tests, built as JSON (which is YAML) so nothing depends on indentation:
//! one listener with the Sluice wasm filter (optional), one route per version matched on the
//! routing header, a last `weighted_clusters` fallback route, and one cluster per version.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The listener's name in every config built here.
pub const LISTENER: &str = "main";

/// One live version of the rollout: its pod-template hash, the upstream serving it, and its
/// weight in the fallback `weighted_clusters` route.
#[derive(Debug, Clone)]
pub struct VersionUpstream {
    pub hash: String,
    pub port: u16,
    pub fallback_weight: u32,
}

/// The Sluice filter as configured in an HCM: the module (either build) and its JSON policy.
#[derive(Debug, Clone)]
pub struct FilterSetup {
    pub module: FilterModule,
    pub policy_json: String,
}

/// A built Sluice filter module: the proxy-wasm build or the native dynamic module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterModule {
    /// `sluice_filter.wasm`, run by Envoy's V8.
    Wasm(PathBuf),
    /// `libsluice_filter_native.so`, loaded by `envoy.filters.http.dynamic_modules`.
    Native(PathBuf),
}

impl FilterModule {
    /// The HCM filter entry running this module with `policy_json`.
    pub fn http_filter(&self, policy_json: &str) -> Value {
        match self {
            FilterModule::Wasm(path) => wasm_filter(path, policy_json),
            FilterModule::Native(path) => native_filter(path, policy_json),
        }
    }

    /// Text on every line Envoy logs for the filter (`envoy_dynamic_module_callback_log` lines
    /// come from logger `dynamic_modules`, proxy-wasm's `log` from `wasm`).
    pub fn log_marker(&self) -> &'static str {
        match self {
            FilterModule::Wasm(_) => "wasm log",
            FilterModule::Native(_) => "[dynamic_modules]",
        }
    }
}

/// A static Envoy config for one rollout.
#[derive(Debug, Clone)]
pub struct RolloutEnvoyConfig {
    /// The rollout's host (the virtual host's domain).
    pub host: String,
    /// The internal header the per-version routes match on.
    pub routing_header: String,
    pub versions: Vec<VersionUpstream>,
    /// None: no filter at all, only the fallback route splits traffic.
    pub filter: Option<FilterSetup>,
    /// 0 lets the kernel pick; read it back with `Envoy::listener_addr(LISTENER)`.
    pub listener_port: u16,
}

impl RolloutEnvoyConfig {
    /// The whole bootstrap config (admin on a kernel-chosen port).
    pub fn render(&self) -> String {
        json!({
            "admin": {"address": socket_address(0)},
            "stats_config": sluice_stats_config(),
            "static_resources": {
                "listeners": [self.listener()],
                "clusters": self.clusters(),
            },
        })
        .to_string()
    }

    /// A bootstrap whose listener comes from the file-based LDS source `lds_path` (write
    /// [`Self::lds_file`] there, replacing it by rename to update the running Envoy).
    pub fn render_with_file_lds(&self, lds_path: &Path) -> String {
        json!({
            "admin": {"address": socket_address(0)},
            "node": {"id": "sluice-e2e", "cluster": "sluice-e2e"},
            "stats_config": sluice_stats_config(),
            "dynamic_resources": {
                "lds_config": {
                    "path_config_source": {"path": lds_path.display().to_string()},
                    "resource_api_version": "V3",
                },
            },
            "static_resources": {"clusters": self.clusters()},
        })
        .to_string()
    }

    /// The LDS discovery response holding this config's listener.
    pub fn lds_file(&self) -> String {
        let mut listener = self.listener();
        listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
        json!({"resources": [listener]}).to_string()
    }

    /// The listener resource alone.
    pub fn listener(&self) -> Value {
        let mut http_filters = Vec::new();
        if let Some(filter) = &self.filter {
            http_filters.push(filter.module.http_filter(&filter.policy_json));
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            }
        }));
        json!({
            "name": LISTENER,
            "address": socket_address(self.listener_port),
            "filter_chains": [{
                "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        // As deploy/envoy/filter-only.yaml and the generated listener: Envoy
                        // normalises the host as the filter does (sluice_proto::rules).
                        "strip_trailing_host_dot": sluice_proto::rules::HCM_STRIP_TRAILING_HOST_DOT,
                        "strip_any_host_port": sluice_proto::rules::HCM_STRIP_ANY_HOST_PORT,
                        "route_config": self.route_config(),
                        "http_filters": http_filters,
                    }
                }]
            }]
        })
    }

    fn route_config(&self) -> Value {
        let mut routes: Vec<Value> = self
            .versions
            .iter()
            .map(|version| {
                json!({
                    "name": format!("version-{}", version.hash),
                    "match": {
                        "prefix": "/",
                        "headers": [{
                            "name": self.routing_header,
                            "string_match": {"exact": version.hash},
                        }],
                    },
                    "route": {"cluster": cluster_name(&version.hash)},
                })
            })
            .collect();
        let weighted: Vec<Value> = self
            .versions
            .iter()
            .filter(|version| version.fallback_weight > 0)
            .map(|version| {
                json!({"name": cluster_name(&version.hash), "weight": version.fallback_weight})
            })
            .collect();
        routes.push(json!({
            "name": "fallback",
            "match": {"prefix": "/"},
            "route": {"weighted_clusters": {"clusters": weighted}},
        }));
        json!({
            "name": "local",
            "virtual_hosts": [
                {
                    "name": "rollout",
                    "domains": sluice_proto::rules::route_domains(&self.host),
                    "routes": routes,
                },
                {
                    "name": "other",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 404, "body": {"inline_string": "no rollout"}},
                    }],
                },
            ],
        })
    }

    fn clusters(&self) -> Vec<Value> {
        self.versions
            .iter()
            .map(|version| {
                json!({
                    "name": cluster_name(&version.hash),
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "load_assignment": {
                        "cluster_name": cluster_name(&version.hash),
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(version.port)}}]}],
                    },
                })
            })
            .collect()
    }
}

/// Bootstrap `stats_config` that turns the filter's counter names
/// (`wasmcustom.sluice_requests_total.rollout.<r>.version.<v>.reason.<why>`) into Prometheus
/// labels: `sluice_requests_total{rollout="<r>",version="<v>",reason="<why>"}`. Envoy applies
/// each regex to the full name and removes the first capture group; the second is the value.
pub fn sluice_stats_config() -> Value {
    let prefix = r"^wasmcustom\.sluice_requests_total";
    json!({"stats_tags": [
        {"tag_name": "rollout", "regex": format!(r"{prefix}(\.rollout\.([^.]+))\.version\.")},
        {"tag_name": "version", "regex": format!(r"{prefix}\.rollout\.[^.]+(\.version\.([^.]+))\.reason\.")},
        {"tag_name": "reason", "regex": format!(r"{prefix}\.rollout\.[^.]+\.version\.[^.]+(\.reason\.([^.]+))$")},
    ]})
}

/// The Envoy cluster serving one version.
pub fn cluster_name(hash: &str) -> String {
    format!("version-{hash}")
}

/// The Sluice wasm HTTP filter entry for an HCM, failing open onto the fallback route.
pub fn wasm_filter(wasm: &Path, policy_json: &str) -> Value {
    json!({
        "name": "sluice",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "sluice",
                "failure_policy": "FAIL_OPEN",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": policy_json,
                },
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}},
                },
            },
        },
    })
}

/// The native Sluice filter (a dynamic module) entry for an HCM. Its counters go to the
/// `wasmcustom` stats namespace, so they have the Wasm build's names in `/stats` and the same
/// `stats_tags` apply (see the `sluice-filter-native` crate docs).
pub fn native_filter(module: &Path, policy_json: &str) -> Value {
    json!({
        "name": "sluice",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "module": {"local": {"filename": module.display().to_string()}},
                "metrics_namespace": "wasmcustom",
            },
            "filter_name": "sluice",
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": policy_json,
            },
        },
    })
}

fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}
