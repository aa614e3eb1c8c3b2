/**
 * Imported first by the sidecar's entry points (before anything else they import), so the cap of
 * `heap-growth.ts` already holds while they load their modules: set after loading, a sidecar's
 * peak RSS in the side-by-side bench was 128 MB instead of 114 MB.
 */
import { capHeapGrowth } from "./heap-growth.ts";

capHeapGrowth();
