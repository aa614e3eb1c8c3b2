import type { TypeRegistry, XdsResource } from "../../xds/registry.ts";
import {
  CLUSTER,
  CLUSTER_LOAD_ASSIGNMENT,
  HTTP_CONNECTION_MANAGER,
  LISTENER,
  ROUTE_CONFIGURATION,
  ROUTER,
} from "../../xds/type-urls.ts";

/** A service as proxyless gRPC clients address it: `xds:///<name>`. */
export interface ServiceEndpoints {
  /** DNS-like name; the listener resource name clients ask for. */
  readonly name: string;
  readonly endpoints: readonly Endpoint[];
}

export interface Endpoint {
  readonly address: string;
  readonly port: number;
  /** Relative share of traffic; default 1. */
  readonly weight?: number;
  /** Unhealthy endpoints are published as such and receive no traffic. Default true. */
  readonly healthy?: boolean;
  readonly locality?: { readonly region?: string; readonly zone?: string; readonly sub_zone?: string };
}

const SERVICE_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?(:\d{1,5})?$/;

/** Resource names derived from a service name (the listener carries the service name itself). */
export function envoyNames(service: string) {
  return { listener: service, route: `route/${service}`, cluster: `cluster/${service}` };
}

/**
 * The four standard resources that let an unmodified proxyless gRPC client reach `service`:
 * Listener (api_listener → HttpConnectionManager → RDS, Router filter), RouteConfiguration (every
 * request to the one cluster), Cluster (EDS over ADS, round robin), ClusterLoadAssignment.
 */
export function envoyResourcesFor(registry: TypeRegistry, service: ServiceEndpoints): XdsResource[] {
  if (!SERVICE_NAME.test(service.name))
    throw new Error(`service name ${JSON.stringify(service.name)} is not a valid xDS target`);
  const n = envoyNames(service.name);
  const ads = { ads: {}, resource_api_version: "V3" };
  const listener = registry.encode(LISTENER, {
    name: n.listener,
    api_listener: {
      api_listener: {
        "@type": HTTP_CONNECTION_MANAGER,
        stat_prefix: service.name,
        rds: { config_source: ads, route_config_name: n.route },
        http_filters: [{ name: "envoy.filters.http.router", typed_config: { "@type": ROUTER } }],
      },
    },
  });
  const route = registry.encode(ROUTE_CONFIGURATION, {
    name: n.route,
    virtual_hosts: [
      {
        name: service.name,
        domains: ["*"],
        routes: [{ match: { prefix: "" }, route: { cluster: n.cluster } }],
      },
    ],
  });
  const cluster = registry.encode(CLUSTER, {
    name: n.cluster,
    type: "EDS",
    eds_cluster_config: { eds_config: ads, service_name: n.cluster },
    lb_policy: "ROUND_ROBIN",
  });
  return [listener, route, cluster, loadAssignment(registry, n.cluster, service.endpoints)];
}

function loadAssignment(
  registry: TypeRegistry,
  clusterName: string,
  endpoints: readonly Endpoint[],
): XdsResource {
  const byLocality = new Map<string, { locality: Record<string, string>; lb_endpoints: unknown[] }>();
  for (const e of endpoints) {
    if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535) {
      throw new Error(`endpoint ${e.address}:${e.port} of ${clusterName}: port out of range`);
    }
    const locality = {
      region: e.locality?.region ?? "",
      zone: e.locality?.zone ?? "",
      sub_zone: e.locality?.sub_zone ?? "",
    };
    const key = `${locality.region}/${locality.zone}/${locality.sub_zone}`;
    let group = byLocality.get(key);
    if (!group) byLocality.set(key, (group = { locality, lb_endpoints: [] }));
    group.lb_endpoints.push({
      endpoint: { address: { socket_address: { address: e.address, port_value: e.port } } },
      health_status: e.healthy === false ? "UNHEALTHY" : "HEALTHY",
      load_balancing_weight: { value: e.weight ?? 1 },
    });
  }
  return registry.encode(CLUSTER_LOAD_ASSIGNMENT, {
    cluster_name: clusterName,
    // gRPC ignores localities without a weight.
    endpoints: [...byLocality.values()].map((g) => ({ ...g, load_balancing_weight: { value: 1 } })),
  });
}
