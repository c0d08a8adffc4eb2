//! The SMP (Service Mesh Performance) messages, as serde types.
//!
//! Field names, numbering and meaning follow the SMP protos v0.6.1 (see `docs/smp.md`):
//!
//! - names are the proto (snake_case) names; the reader also accepts the protojson lowerCamel
//!   spellings (`smpVersion`, `endpointUrls`, `latenciesMs`, …) through `serde(alias)`;
//! - enums are written as integers (what Meshery/mesheryctl read); the reader also accepts the
//!   enum names (`ISTIO`, `PROTOCOL_HTTP`, `istio`, `http`);
//! - times are RFC 3339 strings in UTC ([`Timestamp`]);
//! - durations are Go duration strings ([`SmpDuration`], parsed by [`crate::duration`]);
//! - proto3 zero values are omitted when writing, and default when reading.
//!
//! Every message type exists twice: the public type here, which ignores unknown fields, and a
//! private shadow copy with `deny_unknown_fields` that the strict reader
//! ([`super::file`]) runs first so its error names the unknown field with its line.
//!
//! Longer than our usual file on purpose: it is one schema (every SMP message, each with its
//! strict shadow), and splitting it would part a message from its shadow.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// The SMP version we write in `smp_version`: the version every published sample uses.
pub const SMP_VERSION: &str = "v0.0.1";

/// Label we put on results to say `latencies_ms` holds real milliseconds (Meshery's files hold
/// seconds in the same field; see docs/smp.md).
pub const LATENCY_UNIT_LABEL: &str = "latency_unit";

/// Label with the name and version of the tool that wrote a document.
pub const GENERATOR_LABEL: &str = "generator";

/// Free-form string map (`labels`, `headers`, `cookies`, `annotations`).
pub type StringMap = BTreeMap<String, String>;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Declares each SMP message twice: the public, lenient type, and a shadow copy in
/// `mod strict` with `deny_unknown_fields` that only the strict reader uses. Field types inside
/// the shadow module resolve to the shadow copies, so strictness reaches every nesting level.
macro_rules! smp_messages {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    )*) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
            pub struct $name { $($body)* }
        )*

        /// Shadow copies of the messages that reject unknown fields (strict reading); not for
        /// use outside the reader.
        #[doc(hidden)]
        pub mod strict {
            #[allow(unused_imports, reason = "the macro body refers to some of these")]
            use super::*;
            $(
                #[derive(Debug, Default, Deserialize)]
                #[serde(deny_unknown_fields)]
                #[allow(dead_code, reason = "only deserialized, to validate a document")]
                pub struct $name { $($body)* }
            )*
        }
    };
}

smp_messages! {
    /// `PerformanceTestConfig`: what load to apply.
    pub struct PerformanceTestConfig {
        /// Spec version the document follows (`v0.0.1`).
        #[serde(default, alias = "smpVersion", skip_serializing_if = "String::is_empty")]
        pub smp_version: String,
        /// Identifier; a result's `test_id` points here.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub id: String,
        /// Test name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub name: String,
        /// Free-form tags.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub labels: StringMap,
        /// Load-generating clients; one is a single generator. Must not be empty.
        #[serde(deserialize_with = "non_empty_seq")]
        pub clients: Vec<Client>,
        /// How long the endpoint is under load (Go duration string, e.g. `60s`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub duration: Option<SmpDuration>,
    }

    /// `PerformanceTestConfig.Client`: one load-generating client.
    pub struct Client {
        /// Client runs inside the cluster.
        #[serde(default, skip_serializing_if = "is_default")]
        pub internal: bool,
        /// `fortio`, `wrk2`, `nighthawk`, or ours (`smp-agent`).
        #[serde(default, alias = "loadGenerator", skip_serializing_if = "String::is_empty")]
        pub load_generator: String,
        /// Protocol (integer enum).
        #[serde(default, skip_serializing_if = "is_default")]
        pub protocol: Protocol,
        /// Parallel connections.
        #[serde(default, skip_serializing_if = "is_default")]
        pub connections: i32,
        /// Requested total rate, requests/second; 0 = as fast as possible.
        #[serde(default, deserialize_with = "int64", skip_serializing_if = "is_default")]
        pub rps: i64,
        /// Request headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub headers: StringMap,
        /// Cookies.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub cookies: StringMap,
        /// Request body.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub body: String,
        /// Content-Type of the body.
        #[serde(default, alias = "contentType", skip_serializing_if = "String::is_empty")]
        pub content_type: String,
        /// Absolute target URLs; at least one.
        #[serde(alias = "endpointUrls", deserialize_with = "endpoint_urls")]
        pub endpoint_urls: Vec<String>,
        /// Certificate for HTTPS targets.
        #[serde(default, alias = "sslCertificate", skip_serializing_if = "String::is_empty")]
        pub ssl_certificate: String,
        /// JSON passed through to the load generator.
        #[serde(default, alias = "additionalOptions", skip_serializing_if = "String::is_empty")]
        pub additional_options: String,
    }

    /// The mesheryctl test-configuration file: `{test, mesh}`.
    ///
    /// `mesh` is a [`ServiceMesh`] (`{type: 3}`), or, as Meshery writes it since 2026, a plain
    /// mesh name (`istio`).
    pub struct TestConfigFile {
        /// The test.
        pub test: PerformanceTestConfig,
        /// The mesh under test.
        #[serde(deserialize_with = "mesh_or_name")]
        pub mesh: ServiceMesh,
    }

    /// `PerformanceTestResult`: what was measured.
    pub struct PerformanceTestResult {
        /// Spec version.
        #[serde(default, alias = "smpVersion", skip_serializing_if = "String::is_empty")]
        pub smp_version: String,
        /// Result id.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub id: String,
        /// Tags (we write `latency_unit: ms` and `generator`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub labels: StringMap,
        /// Test start (UTC).
        #[serde(default, alias = "startTime", skip_serializing_if = "Option::is_none")]
        pub start_time: Option<Timestamp>,
        /// Test end (UTC).
        #[serde(default, alias = "endTime", skip_serializing_if = "Option::is_none")]
        pub end_time: Option<Timestamp>,
        /// Client-observed latency summary, milliseconds (Meshery: seconds, see docs/smp.md).
        #[serde(default, alias = "latenciesMs", skip_serializing_if = "Option::is_none")]
        pub latencies_ms: Option<Latency>,
        /// Achieved throughput over the run, requests/second.
        #[serde(default, alias = "actualQps", skip_serializing_if = "is_default")]
        pub actual_qps: f64,
        /// Link to the details document (relative to the result file, or absolute).
        #[serde(default, alias = "detailsUri", skip_serializing_if = "String::is_empty")]
        pub details_uri: String,
        /// → `PerformanceTestConfig.id`.
        #[serde(default, alias = "testId", skip_serializing_if = "String::is_empty")]
        pub test_id: String,
        /// → `ServiceMeshConfig.id`.
        #[serde(default, alias = "meshConfigId", skip_serializing_if = "String::is_empty")]
        pub mesh_config_id: String,
        /// → `EnvironmentConfig.id`.
        #[serde(default, alias = "envId", skip_serializing_if = "String::is_empty")]
        pub env_id: String,
    }

    /// `PerformanceTestResult.Latency`: latency summary (ms per the proto comment).
    pub struct Latency {
        /// Fastest request.
        #[serde(default)]
        pub min: f64,
        /// Arithmetic mean.
        #[serde(default)]
        pub average: f64,
        /// Median.
        #[serde(default)]
        pub p50: f64,
        /// 90th percentile.
        #[serde(default)]
        pub p90: f64,
        /// 99th percentile.
        #[serde(default)]
        pub p99: f64,
        /// Slowest request.
        #[serde(default)]
        pub max: f64,
    }

    /// `PerformanceTestResult.CPU` (declared by the spec, referenced by no field).
    pub struct Cpu {
        /// Millicores.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// As `/proc/stat`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub user: f64,
        /// As `/proc/stat`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub nice: f64,
        /// As `/proc/stat`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub system: f64,
        /// As `/proc/stat`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub idle: f64,
        /// As `/proc/stat`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub iowait: f64,
        /// As `/proc/stat`.
        #[serde(default, alias = "hardwareInterrupt", skip_serializing_if = "is_default")]
        pub hardware_interrupt: f64,
        /// As `/proc/stat`.
        #[serde(default, alias = "softwareInterrupt", skip_serializing_if = "is_default")]
        pub software_interrupt: f64,
        /// As `/proc/stat`.
        #[serde(default, skip_serializing_if = "is_default")]
        pub steal: f64,
    }

    /// `PerformanceTestResult.Memory` (declared by the spec, referenced by no field).
    pub struct Memory {
        /// MB.
        #[serde(default, alias = "memTotalMb", skip_serializing_if = "is_default")]
        pub mem_total_mb: f64,
        /// MB.
        #[serde(default, alias = "memFreeMb", skip_serializing_if = "is_default")]
        pub mem_free_mb: f64,
        /// MB.
        #[serde(default, alias = "memUsedMb", skip_serializing_if = "is_default")]
        pub mem_used_mb: f64,
    }

    /// `PerformanceTestResult.Swap` (declared by the spec, referenced by no field).
    pub struct Swap {
        /// MB.
        #[serde(default, alias = "swapTotalMb", skip_serializing_if = "is_default")]
        pub swap_total_mb: f64,
        /// MB.
        #[serde(default, alias = "swapFreeMb", skip_serializing_if = "is_default")]
        pub swap_free_mb: f64,
        /// MB.
        #[serde(default, alias = "swapUsedMb", skip_serializing_if = "is_default")]
        pub swap_used_mb: f64,
    }

    /// `ServiceMeshConfig`: the mesh deployment and its overhead.
    pub struct ServiceMeshConfig {
        /// Spec version.
        #[serde(default, alias = "smpVersion", skip_serializing_if = "String::is_empty")]
        pub smp_version: String,
        /// A result's `mesh_config_id` points here.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub id: String,
        /// Tags.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub labels: StringMap,
        /// Ingress gateway.
        #[serde(default, alias = "ingressGateway", skip_serializing_if = "Option::is_none")]
        pub ingress_gateway: Option<IngressGateway>,
        /// All data-plane sidecars together (we fill this from measurement).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub sidecar: Option<Sidecar>,
        /// Telemetry component.
        #[serde(default, alias = "meshTelemetry", skip_serializing_if = "Option::is_none")]
        pub mesh_telemetry: Option<MeshTelemetry>,
        /// Policy component.
        #[serde(default, alias = "meshPolicy", skip_serializing_if = "Option::is_none")]
        pub mesh_policy: Option<MeshPolicy>,
        /// Control plane.
        #[serde(default, alias = "meshControlPlane", skip_serializing_if = "Option::is_none")]
        pub mesh_control_plane: Option<MeshControlPlane>,
        /// Policy enabled.
        #[serde(default, alias = "meshPolicyEnabled", skip_serializing_if = "is_default")]
        pub mesh_policy_enabled: bool,
        /// Telemetry enabled.
        #[serde(default, alias = "meshTelemetryEnabled", skip_serializing_if = "is_default")]
        pub mesh_telemetry_enabled: bool,
        /// mTLS between sidecars.
        #[serde(default, alias = "mtlsEnabled", skip_serializing_if = "is_default")]
        pub mtls_enabled: bool,
        /// Worker threads per proxy.
        #[serde(default, alias = "proxyConcurrency", skip_serializing_if = "is_default")]
        pub proxy_concurrency: i32,
        /// Mesh version/build.
        #[serde(default, alias = "meshBuild", skip_serializing_if = "String::is_empty")]
        pub mesh_build: String,
        /// Proxy build.
        #[serde(default, alias = "proxyBuild", skip_serializing_if = "String::is_empty")]
        pub proxy_build: String,
        /// Experiment group id.
        #[serde(default, alias = "expGroupUuid", skip_serializing_if = "String::is_empty")]
        pub exp_group_uuid: String,
        /// Experiment id.
        #[serde(default, alias = "expUuid", skip_serializing_if = "String::is_empty")]
        pub exp_uuid: String,
        /// Install profile name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub profile: String,
        /// Which mesh, which version.
        #[serde(default, alias = "meshType", skip_serializing_if = "Option::is_none")]
        pub mesh_type: Option<ServiceMesh>,
        /// The workload application.
        #[serde(default, alias = "applicationMetadata", skip_serializing_if = "Option::is_none")]
        pub application_metadata: Option<ApplicationMetadata>,
    }

    /// `ServiceMeshConfig.IngressGateway`.
    pub struct IngressGateway {
        /// Instances.
        #[serde(default, skip_serializing_if = "is_default")]
        pub count: i32,
        /// Millicores.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// MB.
        #[serde(default, alias = "memMb", skip_serializing_if = "is_default")]
        pub mem_mb: i32,
        /// Requests/second through it.
        #[serde(default, skip_serializing_if = "is_default")]
        pub rps: i32,
        /// Bytes through it.
        #[serde(default, skip_serializing_if = "is_default")]
        pub bps: i32,
    }

    /// `ServiceMeshConfig.EgressGateway` (declared by the spec, referenced by no field).
    pub struct EgressGateway {
        /// Instances.
        #[serde(default, skip_serializing_if = "is_default")]
        pub count: i32,
        /// Millicores.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// MB.
        #[serde(default, alias = "memMb", skip_serializing_if = "is_default")]
        pub mem_mb: i32,
        /// Requests/second through it.
        #[serde(default, skip_serializing_if = "is_default")]
        pub rps: i32,
        /// Bytes through it.
        #[serde(default, skip_serializing_if = "is_default")]
        pub bps: i32,
    }

    /// `ServiceMeshConfig.Sidecar`: all data-plane sidecars together (ingress/egress excluded).
    pub struct Sidecar {
        /// Number of sidecars.
        #[serde(default, skip_serializing_if = "is_default")]
        pub count: i32,
        /// CPU used by all sidecars, millicores (1000 = one core busy), averaged over the run.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// Memory (RSS) of all sidecars, MB.
        #[serde(default, alias = "memMb", skip_serializing_if = "is_default")]
        pub mem_mb: i32,
        /// Requests/second traversing all sidecars.
        #[serde(default, skip_serializing_if = "is_default")]
        pub rps: i32,
        /// Bytes/second through all sidecars.
        #[serde(default, skip_serializing_if = "is_default")]
        pub bps: i32,
    }

    /// `ServiceMeshConfig.MeshTelemetry`.
    pub struct MeshTelemetry {
        /// Instances.
        #[serde(default, skip_serializing_if = "is_default")]
        pub count: i32,
        /// Millicores.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// MB.
        #[serde(default, alias = "memMb", skip_serializing_if = "is_default")]
        pub mem_mb: i32,
        /// Requests/second through all proxies.
        #[serde(default, skip_serializing_if = "is_default")]
        pub rps: i32,
    }

    /// `ServiceMeshConfig.MeshPolicy`.
    pub struct MeshPolicy {
        /// Instances.
        #[serde(default, skip_serializing_if = "is_default")]
        pub count: i32,
        /// Millicores.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// MB.
        #[serde(default, alias = "memMb", skip_serializing_if = "is_default")]
        pub mem_mb: i32,
        /// Requests/second through all proxies.
        #[serde(default, skip_serializing_if = "is_default")]
        pub rps: i32,
        /// Cache hit rate (unit unstated by the spec).
        #[serde(default, alias = "cacheHitRate", skip_serializing_if = "is_default")]
        pub cache_hit_rate: i32,
    }

    /// `ServiceMeshConfig.MeshControlPlane`.
    pub struct MeshControlPlane {
        /// Instances.
        #[serde(default, skip_serializing_if = "is_default")]
        pub count: i32,
        /// Millicores.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// MB.
        #[serde(default, alias = "memMb", skip_serializing_if = "is_default")]
        pub mem_mb: i32,
        /// Endpoints.
        #[serde(default, skip_serializing_if = "is_default")]
        pub endpoints: i32,
        /// Services and service entries.
        #[serde(default, skip_serializing_if = "is_default")]
        pub services: i32,
        /// Connected proxies.
        #[serde(default, skip_serializing_if = "is_default")]
        pub sidecars: i32,
        /// Virtual services.
        #[serde(default, alias = "virtualServices", skip_serializing_if = "is_default")]
        pub virtual_services: i32,
        /// Destination rules.
        #[serde(default, alias = "destinationRules", skip_serializing_if = "is_default")]
        pub destination_rules: i32,
        /// Time for a listener change to reach 90 % of proxies, ms.
        #[serde(default, alias = "ldsLatencyMs", skip_serializing_if = "is_default")]
        pub lds_latency_ms: i32,
        /// Same for cluster changes, ms.
        #[serde(default, alias = "cdsLatencyMs", skip_serializing_if = "is_default")]
        pub cds_latency_ms: i32,
    }

    /// `ServiceMesh`: which mesh and version.
    pub struct ServiceMesh {
        /// Mesh type (integer enum).
        #[serde(default, rename = "type")]
        pub r#type: MeshType,
        /// Mesh version.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub version: String,
        /// Tags.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub labels: StringMap,
        /// Annotations.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub annotations: StringMap,
    }

    /// `ApplicationMetadata`: the workload under test.
    pub struct ApplicationMetadata {
        /// Name.
        #[serde(default, alias = "applicationName", skip_serializing_if = "String::is_empty")]
        pub application_name: String,
        /// Version.
        #[serde(default, alias = "applicationVersion", skip_serializing_if = "String::is_empty")]
        pub application_version: String,
        /// Helm chart.
        #[serde(default, alias = "helmchartName", skip_serializing_if = "String::is_empty")]
        pub helmchart_name: String,
        /// Helm chart version.
        #[serde(default, alias = "helmchartVersion", skip_serializing_if = "String::is_empty")]
        pub helmchart_version: String,
        /// CNAB spec version.
        #[serde(default, alias = "cnabspecVersion", skip_serializing_if = "String::is_empty")]
        pub cnabspec_version: String,
        /// Compose version.
        #[serde(default, alias = "composeVersion", skip_serializing_if = "String::is_empty")]
        pub compose_version: String,
        /// Cluster name.
        #[serde(default, alias = "clusterName", skip_serializing_if = "String::is_empty")]
        pub cluster_name: String,
        /// Supported Kubernetes versions.
        #[serde(default, alias = "k8sVersionSupported", skip_serializing_if = "String::is_empty")]
        pub k8s_version_supported: String,
        /// Application protocol (integer enum).
        #[serde(default, alias = "applicationProtocol", skip_serializing_if = "is_default")]
        pub application_protocol: ApplicationProtocol,
    }

    /// `EnvironmentConfig`: the infrastructure.
    pub struct EnvironmentConfig {
        /// Spec version.
        #[serde(default, alias = "smpVersion", skip_serializing_if = "String::is_empty")]
        pub smp_version: String,
        /// A result's `env_id` points here.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub id: String,
        /// Tags (we write `kernel`, `os`, `arch`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub labels: StringMap,
        /// Kubernetes server version, when in a cluster.
        #[serde(default, alias = "kubernetesVersion", skip_serializing_if = "String::is_empty")]
        pub kubernetes_version: String,
        /// Nodes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub nodes: Vec<Node>,
        /// Per-workload footprint.
        #[serde(default, alias = "individualWorkloads", skip_serializing_if = "Vec::is_empty")]
        pub individual_workloads: Vec<IndividualWorkload>,
        /// How traffic reaches the app.
        #[serde(default, alias = "trafficMetadata", skip_serializing_if = "Option::is_none")]
        pub traffic_metadata: Option<TrafficMetadata>,
    }

    /// `EnvironmentConfig.Node`.
    pub struct Node {
        /// Instance/machine type.
        #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
        pub r#type: String,
        /// CPU count.
        #[serde(default, skip_serializing_if = "is_default")]
        pub cores: i32,
        /// Memory, MB.
        #[serde(default, alias = "memMb", deserialize_with = "int64", skip_serializing_if = "is_default")]
        pub mem_mb: i64,
    }

    /// `EnvironmentConfig.IndividualWorkload`.
    pub struct IndividualWorkload {
        /// Workload name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub name: String,
        /// Replicas.
        #[serde(default, skip_serializing_if = "is_default")]
        pub count: i32,
        /// Millicores.
        #[serde(default, alias = "cpuMcores", skip_serializing_if = "is_default")]
        pub cpu_mcores: i32,
        /// MB.
        #[serde(default, alias = "memMb", skip_serializing_if = "is_default")]
        pub mem_mb: i32,
    }

    /// `TrafficMetadata`: how traffic reaches the app.
    pub struct TrafficMetadata {
        /// Load balancer name.
        #[serde(default, alias = "loadBalanceName", skip_serializing_if = "String::is_empty")]
        pub load_balance_name: String,
        /// Load balancer IP.
        #[serde(default, alias = "loadBalanceIp", skip_serializing_if = "String::is_empty")]
        pub load_balance_ip: String,
        /// Host endpoint.
        #[serde(default, alias = "hostEndpoint", skip_serializing_if = "String::is_empty")]
        pub host_endpoint: String,
        /// Prometheus URL.
        #[serde(default, alias = "prometheusUrl", skip_serializing_if = "String::is_empty")]
        pub prometheus_url: String,
        /// HTTP headers.
        #[serde(default, alias = "httpHeaders", skip_serializing_if = "String::is_empty")]
        pub http_headers: String,
        /// User agent.
        #[serde(default, alias = "userAgent", skip_serializing_if = "String::is_empty")]
        pub user_agent: String,
        /// Health endpoint.
        #[serde(default, alias = "pingHealthEndpoint", skip_serializing_if = "String::is_empty")]
        pub ping_health_endpoint: String,
    }
}

// ---------------------------------------------------------------------------------------------
// Enums: written as integers, read from integers or names.

/// Defines an integer proto enum: `Serialize` as the number, `Deserialize` from the number or
/// from a name (the proto name, or a listed short alias, case-insensitive).
macro_rules! proto_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $num:literal => $proto:literal $(| $alias:literal)* ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $num ),*
        }

        impl $name {
            /// Every value, in number order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The proto number.
            pub const fn number(self) -> i32 {
                self as i32
            }

            /// The value for a proto number.
            pub fn from_number(n: i64) -> Option<Self> {
                match n {
                    $( $num => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// The proto name (`ISTIO`).
            pub const fn proto_name(self) -> &'static str {
                match self { $( $name::$variant => $proto ),* }
            }

            /// The value for a name: the proto name or a short alias, any case.
            pub fn from_name(s: &str) -> Option<Self> {
                let s = s.trim();
                $(
                    if s.eq_ignore_ascii_case($proto) $(|| s.eq_ignore_ascii_case($alias))* {
                        return Some($name::$variant);
                    }
                )*
                None
            }

            fn expected() -> String {
                let names: Vec<String> = Self::ALL
                    .iter()
                    .map(|v| format!("{} {}", v.number(), v.proto_name()))
                    .collect();
                format!(concat!("a ", $what, " number or name ({})"), names.join(", "))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.proto_name())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_i32(self.number())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(&$name::expected())
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$name, E> {
                        $name::from_number(n).ok_or_else(|| {
                            E::invalid_value(de::Unexpected::Signed(n), &self)
                        })
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$name, E> {
                        i64::try_from(n)
                            .ok()
                            .and_then($name::from_number)
                            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(n), &self))
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        if let Ok(n) = s.trim().parse::<i64>() {
                            return self.visit_i64(n);
                        }
                        $name::from_name(s)
                            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

proto_enum! {
    /// `ServiceMesh.Type`.
    pub enum MeshType ("mesh type") {
        /// 0: also what a baseline (no mesh) run carries.
        #[default]
        InvalidMesh = 0 => "INVALID_MESH" | "none" | "no mesh",
        /// 1.
        AppMesh = 1 => "APP_MESH" | "app mesh" | "appmesh",
        /// 2.
        Consul = 2 => "CONSUL",
        /// 3.
        Istio = 3 => "ISTIO",
        /// 4.
        Kuma = 4 => "KUMA",
        /// 5.
        Linkerd = 5 => "LINKERD",
        /// 6 (formerly Maesh).
        TraefikMesh = 6 => "TRAEFIK_MESH" | "traefik" | "maesh",
        /// 7.
        Octarine = 7 => "OCTARINE",
        /// 8.
        NetworkServiceMesh = 8 => "NETWORK_SERVICE_MESH" | "nsm",
        /// 9.
        Tanzu = 9 => "TANZU",
        /// 10.
        OpenServiceMesh = 10 => "OPEN_SERVICE_MESH" | "osm",
        /// 11.
        NginxServiceMesh = 11 => "NGINX_SERVICE_MESH" | "nginx",
        /// 12.
        CiliumServiceMesh = 12 => "CILIUM_SERVICE_MESH" | "cilium",
    }
}

proto_enum! {
    /// `PerformanceTestConfig.Client.Protocol`.
    pub enum Protocol ("protocol") {
        /// 0.
        #[default]
        Invalid = 0 => "PROTOCOL_INVALID",
        /// 1.
        Http = 1 => "PROTOCOL_HTTP" | "http",
        /// 2.
        Tcp = 2 => "PROTOCOL_TCP" | "tcp",
        /// 3.
        Udp = 3 => "PROTOCOL_UDP" | "udp",
        /// 4.
        Grpc = 4 => "PROTOCOL_GRPC" | "grpc",
    }
}

proto_enum! {
    /// `ApplicationMetadata.ApplicationProtocol`.
    pub enum ApplicationProtocol ("application protocol") {
        /// 0.
        #[default]
        Invalid = 0 => "PROTOCOL_INVALID",
        /// 1.
        Http = 1 => "PROTOCOL_HTTP" | "http",
        /// 2.
        Https = 2 => "PROTOCOL_HTTPS" | "https",
    }
}

impl MeshType {
    /// The lower-case name we use on the command line (`istio`, `open_service_mesh`).
    pub fn cli_name(self) -> String {
        self.proto_name().to_ascii_lowercase()
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars with a format: timestamps, durations.

/// A point in time, UTC, written as RFC 3339 with nanoseconds (`2020-03-17T14:53:05.499893378Z`).
/// Reading also accepts other offsets (converted to UTC) and protojson's `{seconds, nanos}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(time::OffsetDateTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self(time::OffsetDateTime::now_utc())
    }

    /// From a system time.
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        Self(time::OffsetDateTime::from(t))
    }

    /// From Unix nanoseconds.
    pub fn from_unix_nanos(ns: i128) -> Option<Self> {
        time::OffsetDateTime::from_unix_timestamp_nanos(ns)
            .ok()
            .map(Self)
    }

    /// Unix nanoseconds.
    pub fn unix_nanos(self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    /// Parses RFC 3339 (any offset; kept as the same instant in UTC).
    pub fn parse_rfc3339(s: &str) -> Result<Self, time::error::Parse> {
        time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
            .map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
    }

    /// RFC 3339 in UTC (`Z`), with as many fractional digits as needed.
    pub fn to_rfc3339(self) -> String {
        self.0
            .to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            // Rfc3339 formatting only fails for years outside 0..=9999, which parsing and
            // now() cannot produce; fall back to the Unix seconds, never panic.
            .unwrap_or_else(|_| self.0.unix_timestamp().to_string())
    }

    /// Seconds from `self` to `later` (negative when `later` is earlier).
    pub fn seconds_until(self, later: Timestamp) -> f64 {
        (later.0 - self.0).as_seconds_f64()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time such as 2020-03-17T14:53:05.499893378Z")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(s)
                    .map_err(|e| E::custom(format_args!("invalid RFC 3339 time {s:?}: {e}")))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Timestamp, A::Error> {
                // protojson-less Go encoding of google.protobuf.Timestamp: {seconds, nanos}.
                let (mut seconds, mut nanos) = (0i64, 0i64);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "seconds" => seconds = map.next_value::<I64OrString>()?.0,
                        "nanos" => nanos = map.next_value::<I64OrString>()?.0,
                        other => {
                            return Err(de::Error::unknown_field(other, &["seconds", "nanos"]))
                        }
                    }
                }
                let ns = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
                Timestamp::from_unix_nanos(ns).ok_or_else(|| {
                    de::Error::custom(format_args!("time out of range: {seconds} s"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A Go duration string (`60s`, `1m30s`, `500ms`), validated on read and written back as read.
#[derive(Debug, Clone)]
pub struct SmpDuration {
    value: Duration,
    text: String,
}

impl SmpDuration {
    /// From a duration. Whole seconds are written as one `<integer><h|m|s>` (`90s`, `5m`,
    /// `2h`), the only form mesheryctl passes through; anything else in Go format (`1.5s`,
    /// `500ms`).
    pub fn new(value: Duration) -> Self {
        let text = if value.subsec_nanos() == 0 && value.as_secs() > 0 {
            let s = value.as_secs();
            if s.is_multiple_of(3600) {
                format!("{}h", s / 3600)
            } else if s.is_multiple_of(60) {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            }
        } else {
            crate::duration::format(value)
        };
        Self { value, text }
    }

    /// Parses a Go duration string.
    pub fn parse(text: &str) -> Result<Self, crate::duration::DurationError> {
        Ok(Self {
            value: crate::duration::parse(text)?,
            text: text.trim().to_string(),
        })
    }

    /// The duration.
    pub fn get(&self) -> Duration {
        self.value
    }

    /// The text as read or formatted.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for SmpDuration {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl From<Duration> for SmpDuration {
    fn from(d: Duration) -> Self {
        Self::new(d)
    }
}

impl fmt::Display for SmpDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for SmpDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SmpDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = SmpDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration string such as 60s, 1m30s or 500ms")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SmpDuration, E> {
                SmpDuration::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Field helpers used by `deserialize_with`.

/// An int64 as a number or, as protojson writes int64, a decimal string.
struct I64OrString(i64);

impl<'de> Deserialize<'de> for I64OrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = I64OrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<I64OrString, E> {
                Ok(I64OrString(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<I64OrString, E> {
                i64::try_from(n)
                    .map(I64OrString)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<I64OrString, E> {
                s.trim()
                    .parse()
                    .map(I64OrString)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    I64OrString::deserialize(d).map(|v| v.0)
}

/// A sequence with at least one element. The check runs inside the sequence visitor so the
/// parser reports it at the sequence's own line.
fn non_empty_seq<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(NonEmptySeq::<T>::new("at least one entry"))
}

struct NonEmptySeq<T> {
    what: &'static str,
    marker: std::marker::PhantomData<T>,
}

impl<T> NonEmptySeq<T> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            marker: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> de::Visitor<'de> for NonEmptySeq<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list with {}", self.what)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        if v.is_empty() {
            return Err(de::Error::invalid_length(0, &self));
        }
        Ok(v)
    }
}

/// One endpoint URL, validated where it is read (so errors point at its line).
struct AbsoluteUrl(String);

impl<'de> Deserialize<'de> for AbsoluteUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = AbsoluteUrl;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an absolute URL such as http://host:port/path")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AbsoluteUrl, E> {
                if is_absolute_url(s) {
                    Ok(AbsoluteUrl(s.to_string()))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// `endpoint_urls`: at least one, each an absolute URL (`scheme://host…`).
fn endpoint_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(NonEmptySeq::<AbsoluteUrl>::new(
        "at least one endpoint URL (the load target)",
    ))
    .map(|v| v.into_iter().map(|u| u.0).collect())
}

/// Whether `u` looks like `scheme://host…` (what the load generators accept).
pub fn is_absolute_url(u: &str) -> bool {
    let Some((scheme, rest)) = u.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && !rest.is_empty()
        && !rest.starts_with('/')
        && !u.chars().any(char::is_whitespace)
}

/// Something a mesh type can be put into (the public and the strict `ServiceMesh`).
trait WithMeshType: Default {
    fn with_type(t: MeshType) -> Self;
}

impl WithMeshType for ServiceMesh {
    fn with_type(t: MeshType) -> Self {
        ServiceMesh {
            r#type: t,
            ..Default::default()
        }
    }
}

impl WithMeshType for strict::ServiceMesh {
    fn with_type(t: MeshType) -> Self {
        strict::ServiceMesh {
            r#type: t,
            ..Default::default()
        }
    }
}

/// `mesh:` as a `ServiceMesh` mapping or a bare mesh name/number (Meshery 2026).
fn mesh_or_name<'de, D, M>(d: D) -> Result<M, D::Error>
where
    D: Deserializer<'de>,
    M: WithMeshType + Deserialize<'de>,
{
    struct V<M>(std::marker::PhantomData<M>);
    impl<'de, M: WithMeshType + Deserialize<'de>> de::Visitor<'de> for V<M> {
        type Value = M;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a ServiceMesh mapping such as {type: 3}, or a mesh name such as istio")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<M, A::Error> {
            M::deserialize(de::value::MapAccessDeserializer::new(map))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<M, E> {
            MeshType::deserialize(de::value::StrDeserializer::<E>::new(s)).map(M::with_type)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<M, E> {
            MeshType::deserialize(de::value::I64Deserializer::<E>::new(n)).map(M::with_type)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<M, E> {
            MeshType::deserialize(de::value::U64Deserializer::<E>::new(n)).map(M::with_type)
        }
        fn visit_unit<E: de::Error>(self) -> Result<M, E> {
            Ok(M::default())
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

// ---------------------------------------------------------------------------------------------
// Constructors that the profile command uses.

impl Latency {
    /// Summary of a histogram of **nanosecond** values, in milliseconds.
    pub fn from_histogram_ns(h: &hdrhistogram::Histogram<u64>) -> Self {
        const NS_PER_MS: f64 = 1e6;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            min: h.min() as f64 / NS_PER_MS,
            average: h.mean() / NS_PER_MS,
            p50: h.value_at_quantile(0.50) as f64 / NS_PER_MS,
            p90: h.value_at_quantile(0.90) as f64 / NS_PER_MS,
            p99: h.value_at_quantile(0.99) as f64 / NS_PER_MS,
            max: h.max() as f64 / NS_PER_MS,
        }
    }

    /// The value of a named statistic (`min`, `average`, `p50`, `p90`, `p99`, `max`).
    pub fn get(&self, stat: LatencyStat) -> f64 {
        match stat {
            LatencyStat::Min => self.min,
            LatencyStat::Average => self.average,
            LatencyStat::P50 => self.p50,
            LatencyStat::P90 => self.p90,
            LatencyStat::P99 => self.p99,
            LatencyStat::Max => self.max,
        }
    }

    /// Every value multiplied by `factor` (unit conversion).
    pub fn scaled(&self, factor: f64) -> Self {
        Self {
            min: self.min * factor,
            average: self.average * factor,
            p50: self.p50 * factor,
            p90: self.p90 * factor,
            p99: self.p99 * factor,
            max: self.max * factor,
        }
    }
}

/// The statistics of [`Latency`], in field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyStat {
    /// `min`.
    Min,
    /// `average`.
    Average,
    /// `p50`.
    P50,
    /// `p90`.
    P90,
    /// `p99`.
    P99,
    /// `max`.
    Max,
}

impl LatencyStat {
    /// All, in field order.
    pub const ALL: [LatencyStat; 6] = [
        LatencyStat::Min,
        LatencyStat::Average,
        LatencyStat::P50,
        LatencyStat::P90,
        LatencyStat::P99,
        LatencyStat::Max,
    ];

    /// The SMP field name.
    pub const fn name(self) -> &'static str {
        match self {
            LatencyStat::Min => "min",
            LatencyStat::Average => "average",
            LatencyStat::P50 => "p50",
            LatencyStat::P90 => "p90",
            LatencyStat::P99 => "p99",
            LatencyStat::Max => "max",
        }
    }

    /// The quantile for percentiles (`p99` → 0.99); `None` for min/average/max.
    pub const fn quantile(self) -> Option<f64> {
        match self {
            LatencyStat::P50 => Some(0.50),
            LatencyStat::P90 => Some(0.90),
            LatencyStat::P99 => Some(0.99),
            LatencyStat::Min | LatencyStat::Average | LatencyStat::Max => None,
        }
    }
}

impl fmt::Display for LatencyStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fresh random id in UUID v4 text form, for `id` fields that link documents.
pub fn new_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&word(1).to_le_bytes());
    b[8..].copy_from_slice(&word(2).to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests;
