import type { UserIdentity } from "../user.ts";
import { userClaimValues } from "../user.ts";
import type { UserExpression } from "./schema.ts";

/**
 * `user` tests of an ingress `from` entry, compiled once. Every expression must hold (AND), on the
 * claims of the user the sidecar verified for this request; a request without a verified user meets
 * none of them. A claim can hold several values (groups): Equals, In and Prefix hold when one value
 * does, NotEquals when none equals, Exists when there is one, Absent when there is none.
 */
export type UserTest = (user: UserIdentity | null) => boolean;

function expressionTest(e: UserExpression): (values: readonly string[]) => boolean {
  switch (e.operator) {
    case "Equals": {
      const value = e.value;
      return (vs) => vs.includes(value as string);
    }
    case "NotEquals": {
      const value = e.value;
      return (vs) => !vs.includes(value as string);
    }
    case "In": {
      const values = new Set(e.values);
      return (vs) => vs.some((v) => values.has(v));
    }
    case "Exists":
      return (vs) => vs.length > 0;
    case "Absent":
      return (vs) => vs.length === 0;
    case "Prefix": {
      const prefix = e.value as string;
      return (vs) => vs.some((v) => v.startsWith(prefix));
    }
  }
}

export function compileUserTest(expressions: readonly UserExpression[]): UserTest {
  const tests = expressions.map((e) => {
    const test = expressionTest(e);
    return (user: UserIdentity): boolean => test(userClaimValues(user, e.key));
  });
  return (user) => user !== null && tests.every((t) => t(user));
}
