/** What `apiIngressPolicy` lets app=web do to app=api; every field left out is unrestricted. */
export interface ApiIngress {
  readonly ports?: readonly number[];
  readonly methods?: readonly string[];
  readonly paths?: readonly string[];
}

/**
 * The policy most suites need and none examines: app=web may call app=api, on `ports` when given,
 * with `methods` and `paths` as its HTTP rule when given.
 */
export function apiIngressPolicy(o: ApiIngress = {}): string {
  const http = [
    ...(o.methods ? [`methods: [ ${o.methods.join(", ")} ]`] : []),
    ...(o.paths ? [`paths: [ ${o.paths.map((p) => JSON.stringify(p)).join(", ")} ]`] : []),
  ];
  return `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
${o.ports ? `      ports: [ ${o.ports.join(", ")} ]\n` : ""}${http.length > 0 ? `      http: { ${http.join(", ")} }\n` : ""}`;
}
