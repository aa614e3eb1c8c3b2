import type { SecureContextOptions } from "node:tls";

/**
 * The TLS every Sigil listener that is not a mesh hop offers (control plane gRPC/xDS, HTTP API).
 * TLS 1.3, and TLS 1.2 only for clients that still need it (Envoy's upstream default tops out at
 * 1.2) and only with ECDHE key exchange and AEAD ciphers: no CBC (LUCKY13, padding oracles), no
 * static RSA key exchange (no forward secrecy), no TLS 1.0/1.1. Mesh hops between sidecars accept
 * TLS 1.3 only.
 */
export const LISTENER_TLS_OPTIONS = {
  minVersion: "TLSv1.2",
  ciphers: [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
  ].join(":"),
  honorCipherOrder: true,
} as const satisfies SecureContextOptions;
