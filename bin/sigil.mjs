#!/usr/bin/env node
// The installed `sigil` command: Sigil ships TypeScript sources and runs them through tsx's loader.
import { register } from "tsx/esm/api";

register();
await import("../cmd/sigil/main.ts");
