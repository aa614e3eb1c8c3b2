import pino from "pino";
import { describe, expect, it } from "vitest";
import { EdgeAggregator } from "../../controlplane/flows/edges.ts";
import type { FlowRecord } from "../../core/flow.ts";
import { fromWireFlow, toWireFlow } from "../../core/flow-wire.ts";
import { demo, flow } from "../support/flows-fixtures.ts";
import { parseSidecarConfig } from "../../sidecar/config.ts";
import { ClaimsError, userFromClaims } from "../../sidecar/user-access/claims.ts";
import { cookieValue } from "../../sidecar/user-access/cookies.ts";
import { UserAccessGate } from "../../sidecar/user-access/gate.ts";
import { safeReturnPath } from "../../sidecar/user-access/return-path.ts";
import { isUserFieldName, userFields } from "../../sidecar/user-access/user-fields.ts";

const MAPPING = { sub: "sub", email: "email", emailVerified: "email_verified", groups: "groups" };

describe("return path after sign-in", () => {
  it.each([
    ["/app/orders?id=7", "/app/orders?id=7"],
    ["//evil.example/x", "/"],
    ["/\\evil.example/x", "/"],
    ["/\t/evil.example", "/"],
    ["https://evil.example/", "/"],
    ["/%2F/evil.example", "/%2F/evil.example"],
    ["", "/"],
  ])("%j returns to %j", (target, expected) => {
    expect(safeReturnPath(target)).toBe(expected);
  });
});

describe("user fields", () => {
  it("takes every case and underscore spelling as the sidecar's", () => {
    for (const name of ["x-sigil-user", "x_sigil_user", "x-sigil_user-groups", "x-sigil-user-anything"])
      expect(isUserFieldName(name)).toBe(true);
    for (const name of ["x-sigil-users", "x-sigil", "x-sigil-username"])
      expect(isUserFieldName(name)).toBe(false);
  });

  it("encodes values so a group keeps its comma and no value breaks a line", () => {
    const fields = userFields({ issuer: "https://idp", sub: "a\r\nb", groups: ["x,y", "é"] });
    expect(fields["x-sigil-user"]).toBe("a%0D%0Ab");
    expect(fields["x-sigil-user-groups"]).toBe("x%2Cy,%C3%A9");
  });
});

describe("claim mapping", () => {
  it("maps configured claim names and refuses a mapping that finds the wrong shape", () => {
    const user = userFromClaims(
      { iss: "https://idp", oid: "u-1", upn: "u@x", roles: "admins" },
      { ...MAPPING, sub: "oid", email: "upn", groups: "roles" },
    );
    expect(user).toEqual({ issuer: "https://idp", sub: "u-1", email: "u@x", groups: ["admins"] });
    expect(() => userFromClaims({ iss: "https://idp", sub: "s", groups: [1] }, MAPPING)).toThrow(ClaimsError);
    expect(() => userFromClaims({ iss: "https://idp", sub: "s", email_verified: "yes" }, MAPPING)).toThrow(
      /not a boolean/,
    );
    expect(() => userFromClaims({ iss: "https://idp" }, MAPPING)).toThrow(/claim "sub"/);
  });
});

const USER_ACCESS = {
  ports: [8080],
  issuer: "https://idp.example",
  clientId: "c",
  redirectUri: "https://app.example/.sigil/callback",
  sessionKeyFile: "/k",
};

describe("cookies and configuration", () => {
  it("reads the named cookie among others", () => {
    expect(cookieValue(["a=1; s=two", "s=three"], "s")).toBe("two");
    expect(cookieValue("as=1", "s")).toBeUndefined();
  });

  it("stops start-up on a missing key file, naming the setting and the file", async () => {
    const config = parseSidecarConfig({
      inbound: { userAccess: { ...USER_ACCESS, sessionKeyFile: "/nonexistent/session.key" } },
    }).inbound.userAccess;
    await expect(
      UserAccessGate.create(config as NonNullable<typeof config>, { log: pino({ level: "silent" }) }),
    ).rejects.toThrow(/inbound\.userAccess\.sessionKeyFile: cannot read \/nonexistent\/session\.key/);
  });

  it("refuses an http issuer off loopback and a __Host- cookie without Secure, naming the field", () => {
    const base = { ...USER_ACCESS, issuer: "http://idp.example", cookie: { secure: false } };
    expect(() => parseSidecarConfig({ inbound: { userAccess: base } })).toThrow(
      /inbound\.userAccess\.issuer: must be https \(http only to a loopback host\).*inbound\.userAccess\.cookie\.name: a __Host- cookie must be Secure/,
    );
  });
});

describe("people in flow records and the map", () => {
  it("carries the user over the wire and makes each person their own node, whatever their address", () => {
    const person = (sub: string, address: string): FlowRecord => ({
      ...flow({ from: demo.rogue, to: demo.web, port: 8080 }),
      source: { labels: {}, address, user: { issuer: "https://idp", sub } },
    });
    const alice = person("alice", "198.18.0.1");
    expect(fromWireFlow(toWireFlow(alice)).source.user).toEqual({ issuer: "https://idp", sub: "alice" });
    const edges = new EdgeAggregator();
    for (const r of [alice, person("alice", "198.18.0.2"), person("bob", "198.18.0.1")]) edges.add(r);
    expect(
      edges
        .list()
        .map((e) => e.source.id)
        .sort(),
    ).toEqual(["user:https://idp#alice", "user:https://idp#bob"]);
  });
});
