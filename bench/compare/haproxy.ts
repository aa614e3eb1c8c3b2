import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CLIENT_NAME, SERVER_NAME } from "./peer-pki.ts";
import type { PeerPki } from "./peer-pki.ts";
import type { BackendPorts, PairPorts } from "./topology.ts";
import { GRPC_METHOD, HTTP_PATH } from "./workload.ts";

/**
 * HAProxy as the equivalent pair, one thread each: the client side takes plaintext HTTP/1.1, h2c
 * gRPC and TCP and forwards over mutual TLS 1.3 (connections reused across requests); the server
 * side requires the client certificate and admits only the client's identity, method and path
 * (TCP: only the identity), then forwards to the backend.
 */

const GLOBAL = `global
  nbthread 1
  maxconn 8000
  tune.ssl.default-dh-param 2048
defaults
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
`;

export function haproxyClientConfig(pki: PeerPki, ports: PairPorts): string {
  const tls = `ssl crt ${pki.client.pem} ca-file ${pki.caCert} verify required verifyhost ${SERVER_NAME} sni str(${SERVER_NAME}) ssl-min-ver TLSv1.3`;
  return `${GLOBAL}
frontend h1_in
  mode http
  bind 127.0.0.1:${ports.clientH1}
  default_backend mesh_h1
backend mesh_h1
  mode http
  http-reuse always
  server s 127.0.0.1:${ports.serverH1} ${tls} alpn http/1.1
frontend grpc_in
  mode http
  bind 127.0.0.1:${ports.clientGrpc} proto h2
  default_backend mesh_grpc
backend mesh_grpc
  mode http
  http-reuse always
  server s 127.0.0.1:${ports.serverGrpc} ${tls} alpn h2
frontend tcp_in
  mode tcp
  bind 127.0.0.1:${ports.clientTcp}
  default_backend mesh_tcp
backend mesh_tcp
  mode tcp
  server s 127.0.0.1:${ports.serverTcp} ${tls}
`;
}

export function haproxyServerConfig(pki: PeerPki, ports: PairPorts, backend: BackendPorts): string {
  const tls = `ssl crt ${pki.server.pem} ca-file ${pki.caCert} verify required ssl-min-ver TLSv1.3`;
  const identity = `{ ssl_c_s_dn(CN) -m str ${CLIENT_NAME} }`;
  return `${GLOBAL}
frontend h1_mtls
  mode http
  bind 127.0.0.1:${ports.serverH1} ${tls} alpn http/1.1
  http-request deny deny_status 403 unless ${identity} { method POST } { path ${HTTP_PATH} }
  default_backend app_h1
backend app_h1
  mode http
  http-reuse always
  server app 127.0.0.1:${backend.h1}
frontend grpc_mtls
  mode http
  bind 127.0.0.1:${ports.serverGrpc} ${tls} alpn h2
  http-request deny deny_status 403 unless ${identity} { method POST } { path ${GRPC_METHOD} }
  default_backend app_grpc
backend app_grpc
  mode http
  http-reuse always
  server app 127.0.0.1:${backend.grpc} proto h2
frontend tcp_mtls
  mode tcp
  bind 127.0.0.1:${ports.serverTcp} ${tls}
  tcp-request content reject unless ${identity}
  default_backend app_tcp
backend app_tcp
  mode tcp
  server app 127.0.0.1:${backend.iperf}
`;
}

export async function writeHaproxyConfigs(
  dir: string,
  pki: PeerPki,
  ports: PairPorts,
  backend: BackendPorts,
): Promise<{ client: string; server: string }> {
  const client = join(dir, "haproxy-client.cfg");
  const server = join(dir, "haproxy-server.cfg");
  await writeFile(client, haproxyClientConfig(pki, ports));
  await writeFile(server, haproxyServerConfig(pki, ports, backend));
  return { client, server };
}
