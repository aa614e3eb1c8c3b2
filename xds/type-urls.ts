/** Type URLs of the resources the xDS layer knows. */
export const TYPE_PREFIX = "type.googleapis.com/";

export const LISTENER = `${TYPE_PREFIX}envoy.config.listener.v3.Listener`;
export const ROUTE_CONFIGURATION = `${TYPE_PREFIX}envoy.config.route.v3.RouteConfiguration`;
export const CLUSTER = `${TYPE_PREFIX}envoy.config.cluster.v3.Cluster`;
export const CLUSTER_LOAD_ASSIGNMENT = `${TYPE_PREFIX}envoy.config.endpoint.v3.ClusterLoadAssignment`;
export const HTTP_CONNECTION_MANAGER = `${TYPE_PREFIX}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`;
export const ROUTER = `${TYPE_PREFIX}envoy.extensions.filters.http.router.v3.Router`;

export const TRUST_BUNDLE = `${TYPE_PREFIX}sigil.v1.TrustBundle`;
export const POLICY_SET = `${TYPE_PREFIX}sigil.v1.PolicySet`;
export const PEER_DIRECTORY = `${TYPE_PREFIX}sigil.v1.PeerDirectory`;
export const REVOCATION_LIST = `${TYPE_PREFIX}sigil.v1.RevocationList`;
export const WORKLOAD_IDENTITY = `${TYPE_PREFIX}sigil.v1.WorkloadIdentity`;
