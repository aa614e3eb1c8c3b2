/**
 * The enforcer pool's queue layout and token limits, and the defaults the agent runs it with.
 * Validated with zod, so a layout given by other means (a test harness's file) is checked the same
 * way and its errors name the field.
 */
import { z } from "zod";

export const enforcerPoolSchema = z
  .object({
    queueFirst: z.number().int().min(0).max(65535).default(4200),
    queueCount: z.number().int().min(1).max(64).default(2),
    windowMs: z.number().int().min(100).max(300_000).default(10_000),
    /** Handshake packets each queue holds for a verdict; past it the kernel drops them (never accepts). */
    queueLength: z.number().int().min(1).max(65536).default(4096),
    /** 1500-byte MTU minus IPv6 (40) and a full TCP header (60): what a token-carrying SYN can hold. */
    maxTokenBytes: z.number().int().min(256).max(1400).default(1400),
    exid: z.number().int().min(0).max(0xffff).default(0x5347),
  })
  .strict();

export type EnforcerPoolSettings = z.infer<typeof enforcerPoolSchema>;

export const FAST_PATH_DEFAULTS: EnforcerPoolSettings = enforcerPoolSchema.parse({});
