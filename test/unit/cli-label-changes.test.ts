import { describe, expect, it } from "vitest";
import { parseLabelChanges } from "../../cmd/sigil/workload-target.ts";

describe("sigil workload label arguments", () => {
  it("reads key=value as a set and key- as a removal, as kubectl does", () => {
    expect(parseLabelChanges(["vuln.critical=3", "team-", "note="])).toEqual({
      set: { "vuln.critical": "3", note: "" },
      remove: ["team"],
    });
  });

  it.each([
    [["vuln.critical"], /neither key=value .* nor key-/],
    [["=3"], /neither key=value/],
    [["-"], /neither key=value/],
    [["a=1", "a=2"], /"a" is given twice/],
    [["a=1", "a-"], /"a" is both set and removed/],
    [["a-", "a=1"], /"a" is both set and removed/],
    [["bad key=1"], /bad key=1: /],
  ])("refuses %j, naming the argument", (args, message) => {
    expect(() => parseLabelChanges(args)).toThrow(message);
  });
});
