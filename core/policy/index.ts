/** The policy engine's public surface; see README.md in this folder for the language and semantics. */
export {
  parsePolicyDocuments,
  validatePolicyDocument,
  checkPolicySet,
  formatPolicyError,
  formatFieldPath,
  stringifyPolicyDocuments,
  MAX_POLICY_TEXT_BYTES,
} from "./parse.ts";
export type { ParseResult, ValidateResult, ParsedDocument, PolicyError, SourceLocation } from "./parse.ts";
export { compilePolicySet, emptyPolicySet, CompiledPolicySet, PolicySetError } from "./compile.ts";
export { evaluate, connectionPrecheck, httpRulesOnPort, refusalDecision } from "./evaluate.ts";
export type { AuthzRequest, Decision, Direction, EnforcementMode, HttpRequestFacts } from "./evaluate.ts";
export {
  encodePolicySet,
  decodePolicySet,
  PolicySetResourceError,
  PEER_AUTHENTICATION_DOCUMENT,
} from "./codec.ts";
export type {
  DecodedPolicySet,
  HttpMessage,
  LabelOperator,
  LabelSelectorMessage,
  PeerMessage,
  PolicySetContent,
  PolicySetMessage,
  RuleMessage,
} from "./codec.ts";
export { normalizeRequestPath } from "./path.ts";
export { pathPatternProblem } from "./path-pattern.ts";
export type { NormalizedPath } from "./path.ts";
export { selectorMatches } from "./selector.ts";
export { peerAuthenticationMode, policiesFor, DEFAULT_MTLS_MODE } from "./peer-auth.ts";
export { API_VERSION } from "./schema.ts";
export type {
  AuthorizationPolicy,
  PeerAuthentication,
  PolicyDocument,
  Selector,
  IngressRule,
  EgressRule,
  PeerMatch,
  HttpMatch,
  HeaderMatch,
  MatchExpression,
  MtlsMode,
  RuleAction,
} from "./schema.ts";
