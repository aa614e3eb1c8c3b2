/** The part of oidc-provider's API the suites use (the package ships no type declarations). */
declare module "oidc-provider" {
  import type { IncomingMessage, ServerResponse } from "node:http";

  export interface Account {
    readonly accountId: string;
    claims(): Record<string, unknown>;
  }

  export interface Configuration {
    readonly findAccount: (ctx: unknown, id: string) => Promise<Account | undefined>;
    readonly [setting: string]: unknown;
  }

  export default class Provider {
    constructor(issuer: string, configuration: Configuration);
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }
}
