import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Network-namespace and iptables suites mutate host-wide kernel state; run files one at a time
    // within those folders by marking them sequential in the files themselves.
    pool: "forks",
    reporters: ["default", "./test/support/summary-reporter.ts"],
  },
});
