import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CLIENT_NAME, SERVER_NAME } from "./peer-pki.ts";
import type { PeerPki } from "./peer-pki.ts";
import type { BackendPorts, PairPorts } from "./topology.ts";
import { GRPC_METHOD, HTTP_PATH } from "./workload.ts";

/**
 * nginx as the equivalent pair: a client-side instance taking plaintext HTTP/1.1 and h2c gRPC and
 * forwarding over mutual TLS 1.3 with keep-alive upstream connections; a server-side instance that
 * requires the client certificate, admits only the client's identity, method and path, and
 * forwards to the backend. One worker each, like one Sigil sidecar process.
 */

function common(dir: string, side: string): string {
  const tmp = join(dir, `nginx-${side}-tmp`);
  return `worker_processes 1;
daemon off;
pid ${join(dir, `nginx-${side}.pid`)};
error_log ${join(dir, `nginx-${side}.err`)} warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
`;
}

export function nginxClientConfig(dir: string, pki: PeerPki, ports: PairPorts): string {
  const tls = (p: "proxy" | "grpc") => `
      ${p}_ssl_certificate ${pki.client.cert};
      ${p}_ssl_certificate_key ${pki.client.key};
      ${p}_ssl_trusted_certificate ${pki.caCert};
      ${p}_ssl_verify on;
      ${p}_ssl_name ${SERVER_NAME};
      ${p}_ssl_protocols TLSv1.3;
      ${p}_ssl_session_reuse on;`;
  return `${common(dir, "client")}
  upstream mesh_h1 { server 127.0.0.1:${ports.serverH1}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  upstream mesh_grpc { server 127.0.0.1:${ports.serverGrpc}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  server {
    listen 127.0.0.1:${ports.clientH1};
    location / {
      proxy_pass https://mesh_h1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";${tls("proxy")}
    }
  }
  server {
    listen 127.0.0.1:${ports.clientGrpc} http2;
    location / {
      grpc_pass grpcs://mesh_grpc;${tls("grpc")}
    }
  }
}
`;
}

export function nginxServerConfig(
  dir: string,
  pki: PeerPki,
  ports: PairPorts,
  backend: BackendPorts,
): string {
  const tls = `
    ssl_certificate ${pki.server.cert};
    ssl_certificate_key ${pki.server.key};
    ssl_client_certificate ${pki.caCert};
    ssl_verify_client on;
    ssl_protocols TLSv1.3;`;
  // Authorization equivalent to the Sigil policy: the client's identity, the method and the path.
  const authorize = `
      if ($ssl_client_s_dn != "CN=${CLIENT_NAME}") { return 403; }
      if ($request_method != POST) { return 403; }`;
  return `${common(dir, "server")}
  upstream app_h1 { server 127.0.0.1:${backend.h1}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  upstream app_grpc { server 127.0.0.1:${backend.grpc}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  server {
    listen 127.0.0.1:${ports.serverH1} ssl;${tls}
    location = ${HTTP_PATH} {${authorize}
      proxy_pass http://app_h1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location / { return 403; }
  }
  server {
    listen 127.0.0.1:${ports.serverGrpc} ssl http2;${tls}
    location = ${GRPC_METHOD} {${authorize}
      grpc_pass grpc://app_grpc;
    }
    location / { return 403; }
  }
}
`;
}

/** Writes both configurations and the temp directories they name; returns the two file paths. */
export async function writeNginxConfigs(
  dir: string,
  pki: PeerPki,
  ports: PairPorts,
  backend: BackendPorts,
): Promise<{ client: string; server: string }> {
  for (const side of ["client", "server"]) await mkdir(join(dir, `nginx-${side}-tmp`), { recursive: true });
  const client = join(dir, "nginx-client.conf");
  const server = join(dir, "nginx-server.conf");
  await writeFile(client, nginxClientConfig(dir, pki, ports));
  await writeFile(server, nginxServerConfig(dir, pki, ports, backend));
  return { client, server };
}
