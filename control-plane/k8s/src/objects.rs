//! The parts of Pods and Services the index needs, extracted once per watch event (the index
//! keeps these small records, not whole objects), and the reference naming a Rollout.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use k8s_openapi::{
    api::core::v1::{Pod, Service},
    apimachinery::pkg::util::intstr::IntOrString,
    jiff::Timestamp,
};

/// The label that carries a pod's template hash (Argo Rollouts and Sluice set it on every pod).
pub const POD_TEMPLATE_HASH_LABEL: &str = "rollouts-pod-template-hash";

/// Which API a Rollout comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RolloutApi {
    /// `sluice.dev/v1alpha1`: Sluice runs its steps and writes its status.
    Sluice,
    /// `argoproj.io/v1alpha1`: observed read-only; Argo runs the steps.
    Argo,
}

impl RolloutApi {
    pub fn api_version(self) -> &'static str {
        match self {
            RolloutApi::Sluice => sluice_api::SLUICE_API_VERSION,
            RolloutApi::Argo => sluice_api::ARGO_API_VERSION,
        }
    }
}

/// Names one Rollout object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RolloutRef {
    pub api: RolloutApi,
    pub namespace: String,
    pub name: String,
}

impl RolloutRef {
    pub fn new(api: RolloutApi, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RolloutRef {
            api,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The rollout's name in the traffic model.
    pub fn model_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for RolloutRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Rollout \"{}/{}\"",
            self.api.api_version(),
            self.namespace,
            self.name
        )
    }
}

/// What the index keeps of a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The `rollouts-pod-template-hash` label.
    pub hash: Option<String>,
    pub ip: Option<IpAddr>,
    /// The Ready condition is True.
    pub ready: bool,
    /// Being deleted, or finished (phase Succeeded/Failed): not a live pod of its version.
    pub gone: bool,
    pub created: Option<Timestamp>,
    /// Named container ports, to resolve a Service's named targetPort.
    pub named_ports: BTreeMap<String, u16>,
    /// The first container port, used when the Rollout names no Service.
    pub first_port: Option<u16>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let mut named_ports = BTreeMap::new();
        let mut first_port = None;
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        for port in containers.iter().flat_map(|c| c.ports.iter().flatten()) {
            let Ok(number) = u16::try_from(port.container_port) else {
                continue;
            };
            first_port.get_or_insert(number);
            if let Some(name) = &port.name {
                named_ports.entry(name.clone()).or_insert(number);
            }
        }
        PodInfo {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            hash: labels.get(POD_TEMPLATE_HASH_LABEL).cloned(),
            labels,
            ip,
            ready,
            gone: meta.deletion_timestamp.is_some() || finished,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            named_ports,
            first_port,
        }
    }
}

/// What the index keeps of a Service: its first port (the one Sluice routes to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub port: Option<ServicePort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    pub target_port: Option<IntOrString>,
}

impl ServiceInfo {
    pub fn from_service(service: &Service) -> ServiceInfo {
        let port = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.first())
            .and_then(|p| {
                Some(ServicePort {
                    port: u16::try_from(p.port).ok()?,
                    target_port: p.target_port.clone(),
                })
            });
        ServiceInfo {
            namespace: service
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: service.metadata.name.clone().unwrap_or_default(),
            port,
        }
    }

    /// The pod port traffic for this service goes to: the numeric targetPort, the pod's
    /// container port of that name, or the service port when no targetPort is set. `None` when
    /// the pod has no container port of the named targetPort (Kubernetes skips such pods too).
    pub fn target_port_on(&self, pod: &PodInfo) -> Option<u16> {
        let port = self.port.as_ref()?;
        match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|n| *n != 0),
            Some(IntOrString::String(name)) => match name.parse::<u16>() {
                Ok(n) => Some(n),
                Err(_) => pod.named_ports.get(name).copied(),
            },
        }
    }
}
