import { z } from "zod";

/** What the harness hands one Sigil sidecar process (written as JSON by sigil.ts). */
export const sidecarSpecSchema = z
  .object({
    trustDomain: z.string().min(1),
    config: z.record(z.string(), z.unknown()),
    certChainPem: z.string().min(1),
    privateKeyPem: z.string().min(1),
    bundle: z.unknown(),
    policyYaml: z.string(),
    /** Data-path worker processes (sidecar/worker-processes); 1 = the data path runs in the sidecar process. */
    workers: z.number().int().min(1).max(64).default(1),
    /** Measure event-loop delay with a 1 ms timer (loop-monitor.ts): a diagnostic that wakes the sidecar. */
    loopDelay: z.boolean().default(false),
    peers: z.array(
      z
        .object({
          address: z.string(),
          port: z.number().int(),
          spiffeId: z.string(),
          labels: z.record(z.string(), z.string()),
          sidecarHost: z.string(),
          sidecarPort: z.number().int(),
        })
        .strict(),
    ),
  })
  .strict();
export type SidecarSpec = z.infer<typeof sidecarSpecSchema>;
