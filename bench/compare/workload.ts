/** What every request in the comparison looks like, shared by the backend and the load generator. */

/** Request and response body size (issue 7: 1 KB bodies). */
export const BODY_BYTES = 1024;
/** HTTP/1.1 requests: POST with a 1 KB body, answered with 1 KB. */
export const HTTP_PATH = "/echo";
/** gRPC unary method with a 1 KB message each way (bytes passed through, no schema). */
export const GRPC_METHOD = "/bench.Echo/Unary";
